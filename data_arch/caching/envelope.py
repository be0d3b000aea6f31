"""The envelope a cached value is stored in, and its binary encoding.

An envelope records the generations the value was computed under, its soft expiry, how long
the loader took (for XFetch) and, for negative caching, the remembered exception. On the wire:

    b"DA2" | flags u8 | expires f64 | delta f64 | n u16 | n x generation i64
           | [u32 length + JSON of the remembered exception] | payload

A fixed binary header decodes in well under a microsecond; the payload is the serializer's
(flags say which, whether it is zlib-compressed, and whether JSON needs the tag walk). A
process never decodes a payload written with another serializer than its own: a JSON process
never unpickles what it finds.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import struct
from typing import Any

from data_arch.caching.serializers import compress, decompress, get_serializer

__all__ = ["Envelope", "decode", "encode"]

logger = logging.getLogger("data_arch.caching")

MAGIC = b"DA2"
_HEAD = struct.Struct(">3sBddH")
_LEN = struct.Struct(">I")
_COMPRESSED, _PICKLE, _TAGGED, _NEGATIVE = 1, 2, 4, 8
_GENS: dict[int, struct.Struct] = {}


def _gens(n: int) -> struct.Struct:
    found = _GENS.get(n)
    if found is None:
        found = _GENS[n] = struct.Struct(f">{n}q")
    return found


@dataclasses.dataclass(slots=True)
class Envelope:
    value: Any
    generations: tuple[int, ...]
    expires: float  # soft expiry, epoch seconds
    delta: float  # seconds the loader took
    negative: dict[str, Any] | None = None
    size: int = 0  # encoded bytes (what the L1 counts)


def encode(envelope: Envelope, serializer_name: str, compress_min_bytes: int | None) -> bytes:
    """The envelope as bytes; raises CacheSerializationError before anything is written."""
    serializer = get_serializer(serializer_name)
    payload, tagged = serializer.dumps(envelope.value)
    payload, compressed = compress(payload, compress_min_bytes)
    flags = (
        (_COMPRESSED if compressed else 0)
        | (_PICKLE if serializer.code else 0)
        | (_TAGGED if tagged else 0)
        | (_NEGATIVE if envelope.negative is not None else 0)
    )
    n = len(envelope.generations)
    parts = [
        _HEAD.pack(MAGIC, flags, envelope.expires, round(envelope.delta, 6), n),
        _gens(n).pack(*envelope.generations),
    ]
    if envelope.negative is not None:
        remembered = json.dumps(envelope.negative, separators=(",", ":")).encode()
        parts += [_LEN.pack(len(remembered)), remembered]
    parts.append(payload)
    return b"".join(parts)


_unpack_head = _HEAD.unpack_from
_JSON = get_serializer("json")
_PICKLED = get_serializer("pickle")


def decode(blob: bytes | None, serializer_name: str, alias: str = "") -> Envelope | None:
    """The envelope in ``blob``; None when absent, foreign, of the other serializer or broken."""
    if not blob or not blob.startswith(MAGIC):
        return None
    try:
        _, flags, expires, delta, n = _unpack_head(blob)
        if flags & _PICKLE:
            if serializer_name != "pickle":
                return None
            serializer = _PICKLED
        elif serializer_name != "json":
            return None
        else:
            serializer = _JSON
        gens = _GENS.get(n) or _gens(n)
        generations = gens.unpack_from(blob, _HEAD.size)
        offset = _HEAD.size + gens.size
        negative = None
        if flags & _NEGATIVE:
            (length,) = _LEN.unpack_from(blob, offset)
            offset += _LEN.size
            negative = json.loads(blob[offset : offset + length])
            offset += length
        payload = blob[offset:]
        if flags & _COMPRESSED:
            payload = decompress(payload)
        value = serializer.loads(payload, flags & _TAGGED)
        return Envelope(value, generations, expires, delta, negative, len(blob))
    except Exception:
        logger.warning("ignoring an unreadable cache entry on %r", alias)
        return None
