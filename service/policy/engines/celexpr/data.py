"""Plain Python data -> what Google's C++ runtime takes, and its results back to plain data.

Data crosses into C++ as plain Python values, with the adapter's conversions: timestamps and
durations inside maps become protobuf `Timestamp`s and `Duration`s, `None` fields of the
request are left out (so `has()` works), and integers beyond int64 become doubles, exactly as
the cel-python engine reads them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from google.protobuf import duration_pb2, timestamp_pb2

from service.policy.cel import REQUEST, RequestFields, Value, json_number
from service.policy.request import ConnectionRequest

__all__ = ["plain", "request_data", "timestamp", "to_data"]

_EVERY_FIELD: RequestFields = dict.fromkeys(REQUEST.fields)
_FREE_FORM = frozenset(name for name, field in REQUEST.fields.items() if field.kind == "any")


def request_data(request: ConnectionRequest, fields: RequestFields | None = None) -> dict[str, Any]:
    """The request as data for C++, the fast way (once per evaluation, the hot path): only
    the `fields` the policy reads, when it says which (the runtime takes in every value it is
    given, and fewer values cost less), else all of them.

    The schema bounds every typed field (counts far below int64), so only absent fields and
    timestamps need work there; free-form data gets the full conversion. No string holds
    U+0000, at which the runtime would cut it: requests, payloads, params and literals refuse it.
    """
    data: dict[str, Any] = {}
    for key, names in (_EVERY_FIELD if fields is None else fields).items():
        value = getattr(request, key)
        if value is None:
            continue
        if names is not None:  # some fields of a struct; plain loops, the fastest way here
            part = {}
            for name in names:
                field = getattr(value, name)
                if field is not None:
                    part[name] = _typed(field)
            data[key] = part
        elif isinstance(value, msgspec.Struct):
            found = msgspec.to_builtins(value, builtin_types=(datetime,)).items()
            data[key] = {name: _typed(field) for name, field in found if field is not None}
        elif key in _FREE_FORM:
            data[key] = to_data(msgspec.to_builtins(value), keep_null=False)
        else:
            data[key] = _typed(value)
    return data


def _typed(value: Any) -> Any:
    """A typed field's value for C++: timestamps as protobuf, the rest as it is."""
    return timestamp(value) if type(value) is datetime else value


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    delta = value - _EPOCH  # exact, unlike value.timestamp() (a float)
    seconds = delta.days * 86_400 + delta.seconds
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=delta.microseconds * 1000)


def to_data(value: object, keep_null: bool) -> Any:
    """Plain Python data -> what the C++ runtime accepts inside maps and lists."""
    if isinstance(value, dict):
        return {
            to_data(k, keep_null): to_data(v, keep_null)
            for k, v in value.items()
            if keep_null or v is not None
        }
    if isinstance(value, list | tuple):
        return [to_data(v, keep_null) for v in value]
    if isinstance(value, str | bool | float) or value is None:
        return value
    if isinstance(value, int):
        return json_number(value)
    if isinstance(value, datetime):
        return timestamp(value)
    if isinstance(value, timedelta):
        duration = duration_pb2.Duration()
        duration.FromTimedelta(value)
        return duration
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    raise TypeError(f"cannot give a `{type(value).__name__}` to CEL")


def plain(value: Any) -> Value:
    """The runtime's plain values, normalised: bytes, not bytearray; UTC datetimes."""
    if isinstance(value, bool | int | str | float) or value is None:
        return value
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return value  # type: ignore[no-any-return]  # bytes, timedelta
