"""Redis key layout, cache namespaces and argument digests: the one home of each.

    {<p>:<ns>}:g:all                  tenant-wide generation counter
    {<p>:<ns>}:g:m:<app.model>        per-model generation counter
    {<p>:<ns>}:g:t:<tag>              per-tag generation counter
    {<p>:<ns>}:p                      WAL positions of the counters' last bumps (hash)
    {<p>:<ns>:<name>:<digest>}:v      a cached envelope
    {<p>:<ns>:<name>:<digest>}:l      the loader lease of that value
    {<p>:<ns>:<name>:<digest>}:k      its single-key invalidation version and WAL positions (hash)
    {<p>:<ns>:<name>:<digest>}:w      "a caller is waiting for this value" marker

``<ns>`` is ``shared`` when no tenant is active, ``s=<schema>`` for a schema tenant and
``p=<pk>`` for a tenant known only by its primary key. Every part outside
``[A-Za-z0-9_.-]{1,64}`` is replaced by ``~`` and a digest; ``~`` and ``=`` never occur in a
plain part, so no two tenants -- a forged schema named like another's digest, ``id-5`` against
``Tenant(pk=5)`` -- can share a namespace.

On Redis Cluster the ``{...}`` hash tags put a namespace's counters and WAL positions in one
slot (read together by one ``MGET`` or script, so they are always consistent with each other),
while each value has its own slot with its lease, version and marker, so one busy namespace is
spread over the whole cluster instead of being one hot slot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import decimal
import hashlib
import json
import re
import threading
import uuid
from collections.abc import Iterable
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections

from data_arch.tenancy.context import Tenant, current_tenant

__all__ = [
    "CacheKeyError",
    "Keys",
    "Namespace",
    "argument_digest",
    "current_namespace",
    "namespace_of_generation",
    "safe_part",
]

SHARED = "shared"
_SAFE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}\Z")


class CacheKeyError(TypeError):
    """A cache key could not be built from the arguments; the message says which one."""


def safe_part(text: str) -> str:
    """``text`` if short and plain, otherwise ``~`` and a digest of it (never ``{}:=~``)."""
    if _SAFE.match(text):
        return text
    return "~" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def tenant_label(tenant: Tenant | None) -> str:
    """The namespace label of ``tenant``: ``shared``, ``s=<schema>`` or ``p=<pk>``."""
    if tenant is None:
        return SHARED
    if tenant.schema_name is not None:
        return "s=" + safe_part(tenant.schema_name)
    return "p=" + safe_part(str(tenant.pk))


@dataclasses.dataclass(frozen=True, slots=True)
class Keys:
    """Every Redis key one cached value uses (see the module docstring for the layout)."""

    value: str
    lease: str
    version: str
    waiting: str
    #: The generation counters the value depends on, tenant-wide first.
    generations: tuple[str, ...]
    #: Their suffixes (``all``, ``m:shop.order``...): the fields of ``positions``.
    suffixes: tuple[str, ...]
    #: The namespace's WAL-positions hash.
    positions: str


class Namespace:
    """The tenant (or shared) space a key lives in; ``slot`` is its Redis Cluster hash tag."""

    __slots__ = ("_hash", "label", "prefix", "slot")

    def __init__(self, prefix: str, label: str) -> None:
        self.prefix = prefix
        self.label = label
        self.slot = "{" + safe_part(prefix) + ":" + label + "}"
        self._hash = hash(self.slot)

    @classmethod
    def of(cls, prefix: str, tenant: Tenant | None) -> Namespace:
        return cls(prefix, tenant_label(tenant))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Namespace) and other.slot == self.slot

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"Namespace({self.slot})"

    @property
    def shared(self) -> bool:
        return self.label == SHARED

    def generation_key(self, suffix: str) -> str:
        return f"{self.slot}:g:{suffix}"

    def tenant_generation(self) -> str:
        return self.generation_key("all")

    def model_generation(self, label: str) -> str:
        return self.generation_key("m:" + label.lower())

    def tag_generation(self, tag: str) -> str:
        return self.generation_key("t:" + safe_part(tag))

    def positions_key(self) -> str:
        return f"{self.slot}:p"

    def keys(self, name: str, digest: str, models: Iterable[str], tags: Iterable[str]) -> Keys:
        """The keys of the value ``name``/``digest`` that depends on ``models`` and ``tags``."""
        suffixes = (
            "all", *("m:" + m.lower() for m in models), *("t:" + safe_part(t) for t in tags)
        )
        tag = "{" + safe_part(self.prefix) + ":" + self.label + ":" + safe_part(name) + ":" + digest
        return Keys(
            value=tag + "}:v",
            lease=tag + "}:l",
            version=tag + "}:k",
            waiting=tag + "}:w",
            generations=tuple(self.generation_key(s) for s in suffixes),
            suffixes=suffixes,
            positions=self.positions_key(),
        )

def value_record_keys(value_key: str) -> list[str]:
    """The value key with its lease, version and marker keys (one slot)."""
    stem = value_key[:-1]
    return [value_key, stem + "l", stem + "k", stem + "w"]


def positions_of_generation(generation_key: str) -> str:
    """The WAL-positions hash of the namespace a counter belongs to."""
    return generation_key.split("}", 1)[0] + "}:p"


def namespace_of_generation(generation_key: str) -> str:
    """The tenant-wide counter of the namespace ``generation_key`` (a counter) belongs to."""
    return generation_key.split("}", 1)[0] + "}:g:all"


def namespace_of_value(value_key: str) -> str:
    """The tenant-wide counter of the namespace a value key belongs to."""
    inner = value_key[1:].split("}", 1)[0]  # <p>:<ns>:<name>:<digest>
    prefix, label = inner.split(":", 2)[:2]
    return "{" + prefix + ":" + label + "}:g:all"


# --------------------------------------------------------------------------- the current one

_thread = threading.local()
_namespaces: dict[tuple[str, Any, Any], Namespace] = {}
#: (tenant, prefix, namespace) of the last tenant asked about: a request asks about one
#: tenant object many times, and an identity check is cheaper than hashing it.
_last: tuple[Any, Any, Any] = (None, None, None)
_public: list[str] = []
_epoch = 0  # moves on when the memos are dropped, so other threads' memos lapse too
_get_running_loop = asyncio._get_running_loop


def _default_connection() -> Any:
    """The default alias's connection object (memoised per sync thread: a hot-path lookup)."""
    if _get_running_loop() is not None:
        return connections[DEFAULT_DB_ALIAS]
    connection = getattr(_thread, "connection", None)
    if connection is None:
        # Database connections are thread-critical: one object per sync thread, for good.
        connection = _thread.connection = connections[DEFAULT_DB_ALIAS]
    return connection


def _public_schema() -> str:
    if not _public:
        from data_arch.tenancy.registry import public_schema_name

        _public.append(public_schema_name())
    return _public[0]


def namespace_for(prefix: str, tenant: Tenant | None) -> Namespace:
    """The (memoised) namespace of ``tenant`` under ``prefix``."""
    memo = (prefix, None, None) if tenant is None else (prefix, tenant.pk, tenant.schema_name)
    found = _namespaces.get(memo)
    if found is None:
        if len(_namespaces) > 100_000:
            _namespaces.clear()
        found = _namespaces[memo] = Namespace.of(prefix, tenant)
    return found


def current_namespace(prefix: str, using: str | None = None) -> Namespace:
    """The namespace of the current tenant, else of the connection's django-tenants schema,
    else the shared one -- for reads and for the invalidations of writes alike.

    A block whose schema was set by django-tenants (its middleware or ``schema_context``)
    without :func:`data_arch.tenancy.tenant_context` still gets that schema's namespace, so it
    never reads or fills another tenant's (or the shared) values.
    """
    global _last
    tenant = current_tenant()
    if tenant is not None:
        last = _last
        if last[0] is tenant and last[1] == prefix:
            return last[2]
        found = namespace_for(prefix, tenant)
        _last = (tenant, prefix, found)
        return found
    if using is None:
        connection = _default_connection()
        schema = getattr(connection, "schema_name", None)
        last = getattr(_thread, "last", None)
        if last is not None and last[0] == schema and last[1] == prefix and last[3] == _epoch:
            return last[2]
        found = _for_schema(prefix, schema)
        _thread.last = (schema, prefix, found, _epoch)
        return found
    return _for_schema(prefix, getattr(connections[using], "schema_name", None))


def _for_schema(prefix: str, schema: str | None) -> Namespace:
    if schema and schema != _public_schema():
        return namespace_for(prefix, Tenant(pk=None, schema_name=schema))
    return namespace_for(prefix, None)


def forget_namespaces() -> None:
    """Drop memoised namespaces and connections (a setting changed, tests)."""
    global _last, _epoch
    _epoch += 1
    _namespaces.clear()
    _public.clear()
    _last = (None, None, None)
    _thread.__dict__.clear()


# --------------------------------------------------------------------------- argument digests


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


#: Exact types whose values can key a memo without changing meaning (``1``, ``1.0`` and
#: ``True`` are equal dict keys but different cache keys: the type goes into the memo key).
FLAT_TYPES = frozenset({str, int, float, bool, type(None)})


def flat_signature(value: Any) -> Any:
    """A hashable stand-in for ``value``'s types when it is a flat str/number/None or a tuple
    of them (so it can key a memo), else None."""
    kind = type(value)
    if kind is str:
        return str
    if kind is tuple:
        types = tuple(map(type, value))
        return types if FLAT_TYPES.issuperset(types) else None
    return kind if kind in FLAT_TYPES else None
