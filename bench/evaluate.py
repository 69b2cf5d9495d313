"""Microseconds per decision for the bundled policies, in process (no HTTP).

    python bench/evaluate.py [--policies DIR] [--seconds S] [--engines a,b] [--pieces]

For each policy and each CEL engine, evaluates the sample requests in examples/requests/
round-robin in batches for about S seconds and prints the median per-decision time of the
batches (the whole `evaluate()`: conversion, rules, templates, decision id), and the ratio of
the engines in the same run. Also prints how long loading and compiling the directory takes.
With --pieces: where the time of one `default` decision goes under the first engine (best-of
`timeit` of each piece, and of the whole route-level `decide()` around it).
Figures go to bench/README.md with the machine they ran on; never assert timings in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from service.policy import ConnectionRequest, PolicySet, evaluate, load_policies
from service.policy.engines import ENGINES
from service.policy.evaluator import decision_id
from service.policy.request import decode_json, decode_request

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", type=Path, default=ROOT / "policies")
    parser.add_argument("--seconds", type=float, default=1.0, help="time per policy and engine")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated")
    parser.add_argument("--pieces", action="store_true", help="also time the pieces")
    args = parser.parse_args()
    engines = args.engines.split(",")

    sets, load_ms = {}, {}
    for engine in engines:
        started = time.perf_counter()
        sets[engine] = load_policies(args.policies, engine=engine)
        load_ms[engine] = (time.perf_counter() - started) * 1000
    requests = [
        decode_request(p.read_bytes()) for p in sorted(ROOT.glob("examples/requests/*.json"))
    ]
    now = datetime(2026, 11, 22, 9, tzinfo=UTC)

    print(
        f"# {platform.node()}: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )
    for engine in engines:
        print(
            f"load + compile {len(sets[engine].policies)} policies ({engine}): "
            f"{load_ms[engine]:.0f} ms"
        )
    print(f"{'policy':30}" + "".join(f"{e + ' µs':>22}" for e in engines) + f"{'ratio':>8}")
    for name in sorted(sets[engines[0]].policies):
        medians = [median_us(sets[e], name, requests, now, args.seconds) for e in engines]
        ratio = f"{medians[-1] / medians[0]:7.0f}x" if len(medians) > 1 else ""
        print(f"{name:30}" + "".join(f"{m:22.0f}" for m in medians) + ratio)
    if args.pieces:
        print(f"\npieces of one decision: `default`, {SAMPLE}, {engines[0]}, best-of µs")
        for label, micros in pieces(args.policies, engines[0]):
            print(f"  {label:58}{micros:8.1f}")
    return 0


SAMPLE = "old-colleague"


def pieces(directory: Path, engine: str) -> list[tuple[str, float]]:
    """Best-of `timeit` of each piece of one decision, and of the route's `decide()`."""
    os.environ |= {
        "HANDSHAKE_POLICIES": str(directory),
        "HANDSHAKE_CEL_ENGINE": engine,
        "HANDSHAKE_LOG_LEVEL": "warning",  # the decision log would time the log sink
    }
    from service.api.app import create_app
    from service.api.evaluation import evaluate_body
    from service.api.schemas import EvaluateBody
    from service.log import configure_logging
    from service.settings import load_settings

    settings = load_settings()
    configure_logging(settings)
    app = create_app(settings)
    state = app.state.handshake
    raw = b'{"request": %s}' % (ROOT / f"examples/requests/{SAMPLE}.json").read_bytes()
    batch = b'{"items": [%s]}' % b",".join([raw] * 100)
    body = decode_json(raw, EvaluateBody)
    policy_set, request, now = state.policy_set, body.request, datetime.now(UTC)
    policy = policy_set.get("default")
    asgi_scope = {"type": "http", "headers": [], "state": {}}
    steps: list[tuple[str, Callable[[], object]]] = [
        ("decode the body (msgspec, strict)", lambda: decode_json(raw, EvaluateBody)),
        ("the request as the engine's data (scope)", lambda: policy.scope(request, now)),
    ]
    if (rules := policy.rules_program) is not None:  # the engine decides in one call
        steps.append(
            (
                "scope + the rules program (one call into the engine)",
                lambda: rules.first_match(policy.scope(request, now)),
            )
        )
    steps += [
        ("the decision id", lambda: decision_id(policy_set, "default", request, now, None)),
        (
            "evaluate(), the id given",
            lambda: evaluate(policy_set, "default", request, now=now, identifier="x"),
        ),
        ("evaluate()", lambda: evaluate(policy_set, "default", request, now=now)),
        (
            "the route's decide(): the clock, evaluate(), metrics",
            lambda: evaluate_body(state, body, asgi_scope),
        ),
    ]
    best = [min(timeit.repeat(step, number=500, repeat=7)) / 500 * 1e6 for _, step in steps]
    floor = min(timeit.repeat(lambda: _least_batch(policy_set, batch), number=5, repeat=7))
    return [
        *((label, micros) for (label, _), micros in zip(steps, best, strict=True)),
        ("a batch item at its least: decode, evaluate(), id, encode", floor / 5 / 100 * 1e6),
        ("POST /evaluate through the ASGI app (no HTTP)", _posts(app, "/evaluate", raw, 500)),
        (
            "POST /evaluate/batch of 100 through the ASGI app, per item",
            _posts(app, "/evaluate/batch", batch, 5) / 100,
        ),
    ]


def _least_batch(policy_set: PolicySet, raw: bytes) -> bytes:
    """What no batch route can do without: decode the batch as the route does, then decide
    each item (`evaluate()` computes its id), then encode; none of the route's clock,
    metrics, log or result items. The floor under the batch-to-single ratio (bench/README.md)."""
    from service.api.bodies import decode_batch
    from service.api.schemas import EvaluateBody, batch_body

    now = datetime.now(UTC)
    bodies = [b for b in decode_batch(raw, batch_body(100), 100) if isinstance(b, EvaluateBody)]
    if len(bodies) != 100:
        raise ValueError("the sample batch does not decode")
    return msgspec.json.encode(
        [evaluate(policy_set, "default", body.request, now=now) for body in bodies]
    )


def _posts(app: Any, path: str, body: bytes, number: int) -> float:
    """Best-of µs per POST through the ASGI app, `number` of them in a row on one loop."""

    async def run() -> float:
        started = time.perf_counter()
        for _ in range(number):
            await _post(app, path, body)
        return (time.perf_counter() - started) / number * 1e6

    return min(asyncio.run(run()) for _ in range(7))


async def _post(app: Any, path: str, body: bytes) -> None:
    """One POST through the ASGI app, as uvicorn would hand it over; 200 or it raises."""
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode()}
    scope |= {"query_string": b"", "headers": headers, "http_version": "1.1", "state": {}}
    scope |= {"scheme": "http", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1)}
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({**scope, "root_path": ""}, receive, send)
    if sent[0]["status"] != 200:
        raise RuntimeError(f"{path} answered {sent[0]['status']}: {sent[1:]}")


def median_us(
    policy_set: PolicySet,
    name: str,
    requests: list[ConnectionRequest],
    now: datetime,
    seconds: float,
) -> float:
    per_decision: list[float] = []
    count = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(per_decision) < 5:
        batch = 20
        start = time.perf_counter()
        for i in range(batch):
            evaluate(policy_set, name, requests[(count + i) % len(requests)], now=now)
        per_decision.append((time.perf_counter() - start) / batch * 1e6)
        count += batch
    return statistics.median(per_decision)


if __name__ == "__main__":
    sys.exit(main())
