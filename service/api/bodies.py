"""Request bodies -> typed Structs: the one decoder of the fast lane, the routes and batch
items. Strict (no `0` for `false`, no `"1"` for `1`), bounded in depth before decoding, and
every error an `InputError` with a JSON path or a line:column (service/policy/request.py).

    body = decode_evaluate_body(raw)                       # or InputError
    data = decode_payload(raw)                             # a webhook's, any JSON
    items = decode_batch(raw, BatchBody, max_items)  # each an EvaluateBody or its InputError
"""

from __future__ import annotations

from typing import Any

import msgspec

from service.api.schemas import EvaluateBody
from service.policy.request import InputError, convert, decode_json

__all__ = ["decode_batch", "decode_evaluate_body", "decode_payload"]


def decode_payload(raw: bytes) -> Any:
    """A webhook's payload: any JSON document (U+0000 refused); raises `InputError`."""
    return decode_json(raw, Any)


def decode_evaluate_body(raw: bytes) -> EvaluateBody:
    """The body of `POST /evaluate`; raises `InputError`."""
    return decode_json(raw, EvaluateBody)


class _ValidBatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    items: list[EvaluateBody]


def decode_batch(
    raw: bytes, batch_body: type[msgspec.Struct], max_items: int
) -> list[EvaluateBody | InputError]:
    """The items of `POST /evaluate/batch`, each decoded alone so that one bad item gets its
    own error; raises `InputError` when the batch itself is not valid (`batch_body`)."""
    try:  # the common case, at msgspec's speed: every item is valid
        items: list[EvaluateBody | InputError] = [*decode_json(raw, _ValidBatch).items]
        if 1 <= len(items) <= max_items:
            return items
    except InputError:
        pass
    free: list[Any] = decode_json(raw, batch_body).items  # type: ignore[attr-defined]
    return [_item(data) for data in free]


def _item(data: Any) -> EvaluateBody | InputError:
    try:
        return convert(data, EvaluateBody)
    except InputError as exc:
        return exc
