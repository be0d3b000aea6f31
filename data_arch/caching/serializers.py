"""Encoding cached values: JSON by default (no code runs on load), pickle only when opted in.

The JSON form round-trips what views usually cache -- dicts, lists, str, int, float, bool,
None -- plus tagged ``datetime``, ``date``, ``time``, ``Decimal``, ``UUID``, tuples and sets,
so a value read back equals the value stored. Anything else is refused when it is stored, with
an error naming its type, instead of silently turning into a string.
"""

from __future__ import annotations

import datetime
import decimal
import json
import pickle
import uuid
import zlib
from typing import Any

__all__ = ["CacheSerializationError", "JSONSerializer", "PickleSerializer", "get_serializer"]

_TAG = "__da__"


class CacheSerializationError(TypeError):
    """A value cannot be cached with the configured serializer."""


def _encode(value: Any, path: str) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return {_TAG: "float", "v": repr(value)}
        return value
    if isinstance(value, list):
        return [_encode(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, tuple):
        return {_TAG: "tuple", "v": [_encode(item, f"{path}[{i}]") for i, item in enumerate(value)]}
    if isinstance(value, (set, frozenset)):
        items = [_encode(item, f"{path}{{}}") for item in value]
        return {_TAG: "frozenset" if isinstance(value, frozenset) else "set", "v": items}
    if isinstance(value, dict):
        if all(isinstance(key, str) for key in value) and _TAG not in value:
            return {key: _encode(item, f"{path}[{key!r}]") for key, item in value.items()}
        return {
            _TAG: "dict",
            "v": [
                [_encode(k, f"{path} key"), _encode(v, f"{path}[{k!r}]")] for k, v in value.items()
            ],
        }
    if isinstance(value, datetime.datetime):
        return {_TAG: "datetime", "v": value.isoformat()}
    if isinstance(value, datetime.date):
        return {_TAG: "date", "v": value.isoformat()}
    if isinstance(value, datetime.time):
        return {_TAG: "time", "v": value.isoformat()}
    if isinstance(value, datetime.timedelta):
        return {_TAG: "timedelta", "v": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, decimal.Decimal):
        return {_TAG: "decimal", "v": str(value)}
    if isinstance(value, uuid.UUID):
        return {_TAG: "uuid", "v": str(value)}
    if isinstance(value, bytes):
        return {_TAG: "bytes", "v": value.hex()}
    raise CacheSerializationError(
        f"cannot cache {type(value).__module__}.{type(value).__qualname__} at value{path} with "
        "the JSON serializer: return plain data (dict, list, str, numbers, dates, Decimal, UUID) "
        "-- e.g. list(queryset.values(...)) instead of a queryset or model instances -- or set "
        "DATA_ARCH['CACHE']['SERIALIZER'] = 'pickle' if Redis is trusted"
    )


_DECODERS = {
    "float": float,
    "tuple": lambda v: tuple(_decode(item) for item in v),
    "set": lambda v: {_decode(item) for item in v},
    "frozenset": lambda v: frozenset(_decode(item) for item in v),
    "dict": lambda v: {_decode(k): _decode(item) for k, item in v},
    "datetime": datetime.datetime.fromisoformat,
    "date": datetime.date.fromisoformat,
    "time": datetime.time.fromisoformat,
    "timedelta": lambda v: datetime.timedelta(days=v[0], seconds=v[1], microseconds=v[2]),
    "decimal": decimal.Decimal,
    "uuid": uuid.UUID,
    "bytes": bytes.fromhex,
}


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(item) for item in value]
    if isinstance(value, dict):
        tag = value.get(_TAG)
        if tag is not None:
            return _DECODERS[tag](value["v"])
        return {key: _decode(item) for key, item in value.items()}
    return value


class JSONSerializer:
    name = "json"

    def dumps(self, value: Any) -> bytes:
        return json.dumps(_encode(value, ""), separators=(",", ":"), allow_nan=False).encode()

    def loads(self, data: bytes) -> Any:
        return _decode(json.loads(data))


class PickleSerializer:
    """Opt-in: loading pickle runs code, so only use it when nobody untrusted can write Redis."""

    name = "pickle"

    def dumps(self, value: Any) -> bytes:
        try:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise CacheSerializationError(
                f"cannot cache {type(value).__qualname__} with pickle: {exc}"
            ) from exc

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)


_SERIALIZERS = {"json": JSONSerializer(), "pickle": PickleSerializer()}


def get_serializer(name: str) -> JSONSerializer | PickleSerializer:
    try:
        return _SERIALIZERS[name]
    except KeyError:
        raise ValueError(f"unknown cache serializer {name!r}; use 'json' or 'pickle'") from None


def compress(data: bytes, min_bytes: int | None) -> tuple[bytes, bool]:
    if min_bytes is not None and len(data) >= min_bytes:
        packed = zlib.compress(data, 6)
        if len(packed) < len(data):
            return packed, True
    return data, False


def decompress(data: bytes) -> bytes:
    return zlib.decompress(data)
