"""The framework's ceiling for Handshake's endpoint shape: litestar + msgspec, a POST that
decodes the same body into the same type as `POST /evaluate` and answers a small JSON object,
with no policy work. The issue's "litestar + msgspec, bare endpoint" row; bench/throughput.py
runs it under uvicorn with the options `handshake serve` uses.

    python -m uvicorn --factory bench.bare:app --workers 2 --no-access-log --no-server-header
"""

from __future__ import annotations

import msgspec
from litestar import Litestar, post
from litestar.params import JSONBody

from service.api.schemas import EvaluateBody

PATH = "/bare"


class Ack(msgspec.Struct):
    policy: str | None


@post(PATH, status_code=200)
async def bare(data: JSONBody[EvaluateBody]) -> Ack:
    return Ack(policy=data.policy)


def app() -> Litestar:
    return Litestar([bare], openapi_config=None)
