"""Redis key layout: every key of a namespace shares one Redis Cluster hash slot.

    {<prefix>:t=<tenant>}:gen:all                 tenant-wide generation counter
    {<prefix>:t=<tenant>}:gen:model:<app.model>   per-model generation counter
    {<prefix>:t=<tenant>}:gen:tag:<tag>           per-tag generation counter
    {<prefix>:t=<tenant>}:val:<name>:<digest>     a cached envelope
    {<prefix>:t=<tenant>}:lock:<name>:<digest>    the loader lease of that value

With no tenant active the namespace is ``{<prefix>:shared}``. The ``{...}`` hash tag puts a
namespace's values, its counters and its leases in one slot, so the multi-key commands and
scripts used here never span slots. Names and tenant keys outside ``[A-Za-z0-9_.-]`` or longer
than 64 characters are replaced by a digest, so any argument yields a valid, bounded key.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import hashlib
import json
import re
import uuid
from collections.abc import Iterable
from typing import Any

from data_arch.tenancy.context import Tenant, current_tenant

__all__ = ["CacheKeyError", "Namespace", "argument_digest", "current_namespace", "safe_part"]

SHARED = "shared"
_SAFE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}\Z")


class CacheKeyError(TypeError):
    """A cache key could not be built from the arguments; the message says which one."""


def safe_part(text: str) -> str:
    """``text`` if short and plain, otherwise a digest of it (never ``{``, ``}`` or ``:``)."""
    if _SAFE.match(text):
        return text
    return "h-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


@dataclasses.dataclass(frozen=True)
class Namespace:
    """The tenant (or shared) space a key lives in; ``slot`` is its Redis Cluster hash tag."""

    prefix: str
    tenant: str | None  # Tenant.key, or None for the shared namespace

    @property
    def label(self) -> str:
        return SHARED if self.tenant is None else f"t={safe_part(self.tenant)}"

    @property
    def slot(self) -> str:
        return "{" + safe_part(self.prefix) + ":" + self.label + "}"

    def generation_key(self, kind: str, name: str = "") -> str:
        return f"{self.slot}:gen:{kind}" + (f":{safe_part(name)}" if name else "")

    def tenant_generation(self) -> str:
        return self.generation_key("all")

    def model_generation(self, label: str) -> str:
        return self.generation_key("model", label.lower())

    def tag_generation(self, tag: str) -> str:
        return self.generation_key("tag", tag)

    def value_key(self, name: str, digest: str) -> str:
        return f"{self.slot}:val:{safe_part(name)}:{digest}"

    def lock_key(self, name: str, digest: str) -> str:
        return f"{self.slot}:lock:{safe_part(name)}:{digest}"


def current_namespace(prefix: str, tenant: Tenant | None | object = ...) -> Namespace:
    """The namespace of ``tenant`` (default: the current tenant; ``None``: shared)."""
    if tenant is ...:
        tenant = current_tenant()
    return Namespace(prefix, tenant.key if isinstance(tenant, Tenant) else None)


def _canonical(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return ["f", repr(value)]
    if isinstance(value, (list, tuple)):
        return ["l", [_canonical(item, f"{where}[{i}]") for i, item in enumerate(value)]]
    if isinstance(value, (set, frozenset)):
        items = [_canonical(item, f"{where}{{}}") for item in value]
        return ["s", sorted(items, key=lambda item: json.dumps(item, sort_keys=True))]
    if isinstance(value, dict):
        items = [
            [_canonical(k, f"{where} key"), _canonical(v, f"{where}[{k!r}]")]
            for k, v in value.items()
        ]
        return ["d", sorted(items, key=lambda item: json.dumps(item[0], sort_keys=True))]
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return [type(value).__name__, value.isoformat()]
    if isinstance(value, datetime.timedelta):
        return ["td", value.total_seconds()]
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return [type(value).__name__, str(value)]
    if isinstance(value, bytes):
        return ["b", value.hex()]
    if isinstance(value, type):
        return ["c", f"{value.__module__}.{value.__qualname__}"]
    cache_key = getattr(value, "__cache_key__", None)
    if callable(cache_key):
        return ["o", type(value).__qualname__, _canonical(cache_key(), f"{where}.__cache_key__()")]
    meta = getattr(value, "_meta", None)
    if meta is not None and hasattr(meta, "label_lower") and hasattr(value, "pk"):
        if value.pk is None:
            raise CacheKeyError(f"{where} is an unsaved {meta.label} instance: it has no key")
        return ["m", meta.label_lower, _canonical(value.pk, f"{where}.pk")]
    raise CacheKeyError(
        f"cannot build a cache key from {where} of type {type(value).__qualname__}: pass plain "
        "values (str, numbers, dates, UUID, tuples, dicts, saved model instances), give the type "
        "a __cache_key__() method, or give the decorator key=<function returning such values>"
    )


def argument_digest(parts: Iterable[Any] | Any, where: str = "key") -> str:
    """A stable 40-hex-digit digest of ``parts`` (any length, any characters)."""
    canonical = json.dumps(_canonical(parts, where), separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:40]
