"""Request bodies -> typed Structs: the one decoder of the fast lane, the routes and batch
items. Strict (no `0` for `false`, no `"1"` for `1`), bounded in depth before decoding, and
every error an `InputError` with a JSON path or a line:column (service/policy/request.py).

    body = decode_evaluate_body(raw)                       # or InputError
    data = decode_payload(raw)                             # a webhook's, any JSON
    items = decode_batch(raw, BatchBody, max_items)  # or InputError: every bad item's path
"""

from __future__ import annotations

import functools
from typing import Annotated, Any

import msgspec

from service.api.schemas import EvaluateBody
from service.policy.request import InputError, convert, decode_json

__all__ = ["InvalidItems", "decode_batch", "decode_evaluate_body", "decode_payload"]


def decode_payload(raw: bytes) -> Any:
    """A webhook's payload: any JSON document (U+0000 refused); raises `InputError`."""
    return decode_json(raw, Any)


def decode_evaluate_body(raw: bytes) -> EvaluateBody:
    """The body of `POST /evaluate`; raises `InputError`, which says to wrap a bare connection
    request (`{"requester": …}`, as examples/requests holds them) in `{"request": …}`."""
    try:
        return decode_json(raw, EvaluateBody)
    except InputError as exc:
        if exc.path is None and exc.at is None and _bare_request(raw):
            hint = '; this is a connection request: send it as {"request": <it>}'
            raise InputError(exc.message + hint) from None
        raise


def _bare_request(raw: bytes) -> bool:
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return False
    return isinstance(data, dict) and "requester" in data and "request" not in data


def decode_batch(
    raw: bytes, batch_body: type[msgspec.Struct], max_items: int
) -> list[EvaluateBody]:
    """The items of `POST /evaluate/batch` (`batch_body`, for `max_items`); raises
    `InputError` when the batch itself is not valid (its fields, how many items), or
    `InvalidItems` naming every item that is not (msgspec stops at the first)."""
    try:  # the common case, at msgspec's speed: every item is valid
        items: list[EvaluateBody] = decode_json(raw, batch_body).items  # type: ignore[attr-defined]
        return items
    except InputError:
        pass
    free: list[Any] = decode_json(raw, _free_batch(max_items)).items  # type: ignore[attr-defined]
    decoded, invalid = [], []
    for index, data in enumerate(free):  # each alone: every bad item is named, not the first
        try:
            decoded.append(convert(data, EvaluateBody))
        except InputError as exc:
            invalid.append((index, exc))
    if invalid:
        raise InvalidItems(invalid)
    return decoded


@functools.cache
def _free_batch(max_items: int) -> type[msgspec.Struct]:
    """The batch's shape with its items as any JSON: its own errors, apart from the items'."""
    items = Annotated[list[Any], msgspec.Meta(min_length=1, max_length=max_items)]
    return msgspec.defstruct(
        "BatchBody", [("items", items)], frozen=True, kw_only=True, forbid_unknown_fields=True
    )


class InvalidItems(Exception):  # noqa: N818 - a 400 `invalid-request`, as InputError
    """Items of a batch that are not valid bodies of `POST /evaluate`: (index, error) each."""

    def __init__(self, items: list[tuple[int, InputError]]) -> None:
        super().__init__(f"{len(items)} of the items are not valid")
        self.items = items
