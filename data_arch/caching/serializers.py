"""Encoding cached values: JSON by default (no code runs on load), pickle only when opted in.

The JSON form round-trips what views usually cache -- dicts, lists, str, int, float, bool,
None -- plus tagged ``datetime``/``date``/``time`` (naive, fixed-offset or ``zoneinfo``),
``timedelta``, ``Decimal``, ``UUID``, ``bytes``, tuples, sets, non-string dict keys and
Django's ``SafeString``, so a value read back is equal to, and of the same type as, the value
stored. Anything it cannot give back exactly is refused when stored, with an error naming its
type and where it sits: subclasses such as enum members (``TextChoices``), namedtuples,
``OrderedDict`` or ``defaultdict`` would come back as plain ``str``, ``tuple`` or ``dict``.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import json
import pickle
import uuid
import zlib
from typing import Any

__all__ = ["CacheSerializationError", "JSONSerializer", "PickleSerializer", "get_serializer"]

_TAG = "__da__"


class CacheSerializationError(TypeError):
    """A value cannot be cached with the configured serializer."""


def _safe_string_type() -> type | None:
    try:
        from django.utils.safestring import SafeString
    except ImportError:  # pragma: no cover
        return None
    return SafeString


_SAFE_STRING = _safe_string_type()
_PLAIN = (type(None), bool, int, str)


def _refuse(value: Any, path: str) -> CacheSerializationError:
    kind = type(value)
    name = f"{kind.__module__}.{kind.__qualname__}"
    if isinstance(value, enum.Enum):
        hint = f"cache {kind.__qualname__}.{value.name}.value (the plain value), not the member"
    elif isinstance(value, tuple) and hasattr(value, "_fields"):
        hint = "cache tuple(value) or value._asdict(), not the namedtuple"
    elif isinstance(value, (str, int, float, list, tuple, dict, set, frozenset)):
        hint = f"it would come back as a plain {kind.__mro__[1].__name__}; convert it first"
    else:
        hint = (
            "return plain data (dict, list, str, numbers, dates, Decimal, UUID) -- e.g. "
            "list(queryset.values(...)) instead of a queryset or model instances"
        )
    return CacheSerializationError(
        f"cannot cache {name} at value{path} with the JSON serializer: {hint}; or set "
        "DATA_ARCH['CACHE']['SERIALIZER'] = 'pickle' if Redis is trusted"
    )


def _zone(tzinfo: Any, value: Any, path: str) -> Any:
    """How ``tzinfo`` is written down, or a refusal when it cannot be rebuilt exactly."""
    if tzinfo is None:
        return None
    if type(tzinfo) is datetime.timezone:
        offset = tzinfo.utcoffset(None)
        plain = datetime.timezone(offset)
        name = tzinfo.tzname(None)
        offset_v = [offset.days, offset.seconds, offset.microseconds]
        return ["o", offset_v] if name == plain.tzname(None) else ["o", offset_v, name]
    try:
        from zoneinfo import ZoneInfo
    except ImportError:  # pragma: no cover
        ZoneInfo = None  # noqa: N806
    if ZoneInfo is not None and type(tzinfo) is ZoneInfo and tzinfo.key:
        return ["z", tzinfo.key]
    raise CacheSerializationError(
        f"cannot cache a {type(value).__name__} at value{path} whose tzinfo is "
        f"{type(tzinfo).__module__}.{type(tzinfo).__qualname__} with the JSON serializer: use "
        "datetime.timezone, zoneinfo.ZoneInfo or a naive value (Django's timezone.now() is fine)"
    )


def _unzone(zone: Any) -> Any:
    if zone is None:
        return None
    if zone[0] == "o":
        offset = datetime.timedelta(days=zone[1][0], seconds=zone[1][1], microseconds=zone[1][2])
        return datetime.timezone(offset, *zone[2:])
    from zoneinfo import ZoneInfo

    return ZoneInfo(zone[1])


class _Encoder:
    """Turns a value into JSON-able data; ``tagged`` says whether decoding needs a walk."""

    def __init__(self) -> None:
        self.tagged = False

    def tag(self, kind: str, value: Any) -> dict[str, Any]:
        self.tagged = True
        return {_TAG: kind, "v": value}

    def encode(self, value: Any, path: str) -> Any:
        kind = type(value)
        if kind in _PLAIN:
            return value
        if kind is float:
            if value != value or value in (float("inf"), float("-inf")):
                return self.tag("float", repr(value))
            return value
        if kind is list:
            return [self.encode(item, f"{path}[{i}]") for i, item in enumerate(value)]
        if kind is dict:
            if _TAG not in value and all(type(key) is str for key in value):
                return {key: self.encode(item, f"{path}[{key!r}]") for key, item in value.items()}
            return self.tag(
                "dict",
                [
                    [self.encode(k, f"{path} key {k!r}"), self.encode(v, f"{path}[{k!r}]")]
                    for k, v in value.items()
                ],
            )
        if kind is tuple:
            return self.tag("tuple", [self.encode(x, f"{path}[{i}]") for i, x in enumerate(value)])
        if kind is set or kind is frozenset:
            items = [self.encode(item, f"{path}{{}}") for item in value]
            return self.tag(kind.__name__, items)
        if kind is datetime.datetime:
            zone = _zone(value.tzinfo, value, path)
            naive = value.replace(tzinfo=None).isoformat()
            return self.tag("datetime", [naive, zone, value.fold])
        if kind is datetime.date:
            return self.tag("date", value.isoformat())
        if kind is datetime.time:
            zone = _zone(value.tzinfo, value, path)
            return self.tag("time", [value.replace(tzinfo=None).isoformat(), zone, value.fold])
        if kind is datetime.timedelta:
            return self.tag("timedelta", [value.days, value.seconds, value.microseconds])
        if kind is decimal.Decimal:
            return self.tag("decimal", str(value))
        if kind is uuid.UUID:
            return self.tag("uuid", str(value))
        if kind is bytes:
            return self.tag("bytes", value.hex())
        if kind is _SAFE_STRING:
            return self.tag("safe", str.__str__(value))
        raise _refuse(value, path)


def _datetime(v: list[Any]) -> datetime.datetime:
    return datetime.datetime.fromisoformat(v[0]).replace(tzinfo=_unzone(v[1]), fold=v[2])


def _time(v: list[Any]) -> datetime.time:
    return datetime.time.fromisoformat(v[0]).replace(tzinfo=_unzone(v[1]), fold=v[2])


def _safe(v: str) -> Any:
    from django.utils.safestring import SafeString

    return SafeString(v)


_DECODERS = {
    "float": float,
    "tuple": lambda v: tuple(_decode(item) for item in v),
    "set": lambda v: {_decode(item) for item in v},
    "frozenset": lambda v: frozenset(_decode(item) for item in v),
    "dict": lambda v: {_decode(k): _decode(item) for k, item in v},
    "datetime": _datetime,
    "date": datetime.date.fromisoformat,
    "time": _time,
    "timedelta": lambda v: datetime.timedelta(days=v[0], seconds=v[1], microseconds=v[2]),
    "decimal": decimal.Decimal,
    "uuid": uuid.UUID,
    "bytes": bytes.fromhex,
    "safe": _safe,
}


def _decode(value: Any) -> Any:
    kind = type(value)
    if kind is list:
        return [_decode(item) for item in value]
    if kind is dict:
        tag = value.get(_TAG)
        if tag is not None:
            return _DECODERS[tag](value["v"])
        return {key: _decode(item) for key, item in value.items()}
    return value


_JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
# Payloads are ours (compact UTF-8 JSON): decoding skips json.loads' encoding sniffing.
_raw_decode = json.JSONDecoder().raw_decode


class JSONSerializer:
    name = "json"
    code = 0

    def dumps(self, value: Any) -> tuple[bytes, bool]:
        """The encoded value and whether loading it needs the tag walk."""
        encoder = _Encoder()
        data = encoder.encode(value, "")
        return _JSON_ENCODER.encode(data).encode(), encoder.tagged

    def loads(self, data: bytes, tagged: bool = True) -> Any:
        text = data.decode()
        value, end = _raw_decode(text)
        if end != len(text):
            raise ValueError("trailing data after the cached JSON value")
        return _decode(value) if tagged else value


class PickleSerializer:
    """Opt-in: loading pickle runs code, so only use it when nobody untrusted can write Redis."""

    name = "pickle"
    code = 1

    def dumps(self, value: Any) -> tuple[bytes, bool]:
        try:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), False
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise CacheSerializationError(
                f"cannot cache {type(value).__qualname__} with pickle: {exc}"
            ) from exc

    def loads(self, data: bytes, tagged: bool = False) -> Any:
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
