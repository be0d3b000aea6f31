"""The one place data_arch reads its settings.

Everything lives in a single ``DATA_ARCH`` dict in the project's settings, one sub-dict per
capability. Settings are read when a function below is called -- never at import time -- so
``override_settings`` works, and every value is validated here, with an error that names the
key, the value and what was expected.

    DATA_ARCH = {
        "TENANCY": {...},
        "PARTITIONS": {...},
        "ROUTER": {...},
        "CACHE": {...},
        "BACKFILLS": {...},
    }
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

__all__ = [
    "BackfillSettings",
    "CacheSettings",
    "PartitionSettings",
    "RouterSettings",
    "TenancySettings",
    "backfill_settings",
    "cache_settings",
    "configuration_errors",
    "partition_settings",
    "raw",
    "router_settings",
    "tenancy_settings",
]

SECTIONS = ("TENANCY", "PARTITIONS", "ROUTER", "CACHE", "CELERY", "METRICS", "BACKFILLS")


class SettingError(ImproperlyConfigured):
    """A ``DATA_ARCH`` value is wrong; the message names the key."""


def raw() -> Mapping[str, Any]:
    value = getattr(settings, "DATA_ARCH", {})
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SettingError(f"settings.DATA_ARCH must be a dict, got {type(value).__name__}")
    unknown = sorted(set(value) - set(SECTIONS))
    if unknown:
        raise SettingError(
            f"DATA_ARCH has unknown key(s) {', '.join(map(repr, unknown))}; "
            f"known sections: {', '.join(SECTIONS)}"
        )
    return value


# --------------------------------------------------------------------------- validators

Validator = Callable[[str, Any], Any]


def _name(section: str, key: str) -> str:
    return f"DATA_ARCH[{section!r}][{key!r}]"


def positive_int(name: str, value: Any, *, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingError(f"{name} must be an integer, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise SettingError(f"{name} must be {'>= 0' if allow_zero else '>= 1'}, got {value}")
    return value


def non_negative_int(name: str, value: Any) -> int:
    return positive_int(name, value, allow_zero=True)


def optional_positive_int(name: str, value: Any) -> int | None:
    return None if value is None else positive_int(name, value)


def non_negative_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingError(f"{name} must be a number, got {value!r}")
    if value < 0:
        raise SettingError(f"{name} must be >= 0, got {value}")
    return float(value)


def positive_number(name: str, value: Any) -> float:
    number = non_negative_number(name, value)
    if number == 0:
        raise SettingError(f"{name} must be > 0, got {value}")
    return number


def optional(validate: Validator) -> Validator:
    """``validate``, or None left as None."""

    def check(name: str, value: Any) -> Any:
        return None if value is None else validate(name, value)

    return check


def number_between(low: float, high: float) -> Validator:
    def check(name: str, value: Any) -> float:
        number = non_negative_number(name, value)
        if not low <= number <= high:
            raise SettingError(f"{name} must be between {low:g} and {high:g}, got {value}")
        return number

    return check


def int_between(low: int, high: int) -> Validator:
    def check(name: str, value: Any) -> int:
        number = positive_int(name, value)
        if not low <= number <= high:
            raise SettingError(f"{name} must be an integer between {low} and {high}, got {value}")
        return number

    return check


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SettingError(f"{name} must be True or False, got {value!r}")
    return value


def string(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise SettingError(f"{name} must be a non-empty string, got {value!r}")
    return value


def optional_string(name: str, value: Any) -> str | None:
    return None if value is None else string(name, value)


def custom_setting_name(name: str, value: Any) -> str:
    """A PostgreSQL custom setting name such as ``data_arch.tenant_id``."""
    import re

    text = string(name, value)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_$]*", text):
        raise SettingError(
            f"{name} must be a custom PostgreSQL setting like 'data_arch.tenant_id' "
            f"(prefix.name, letters, digits and underscores), got {value!r}"
        )
    return text


def one_of(*choices: str) -> Validator:
    def check(name: str, value: Any) -> str:
        if value not in choices:
            raise SettingError(
                f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}"
            )
        return value

    return check


def database_alias(name: str, value: Any) -> str:
    alias = string(name, value)
    if alias not in settings.DATABASES:
        raise SettingError(
            f"{name} is {alias!r}, which is not in settings.DATABASES "
            f"(aliases: {', '.join(sorted(settings.DATABASES))})"
        )
    return alias


def database_aliases(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise SettingError(f"{name} must be a list of database aliases, got {value!r}")
    return tuple(database_alias(f"{name}[{i}]", item) for i, item in enumerate(value))


def cache_alias(name: str, value: Any) -> str:
    alias = string(name, value)
    if alias not in settings.CACHES:
        raise SettingError(
            f"{name} is {alias!r}, which is not in settings.CACHES "
            f"(aliases: {', '.join(sorted(settings.CACHES))})"
        )
    return alias


# --------------------------------------------------------------------------- loader

T = TypeVar("T")


# section -> its validated settings. Every statement data_arch wraps reads a section, so each is
# built once and kept until a setting it depends on changes (``clear_cache``).
_memo: dict[str, Any] = {}

#: Django settings the sections are validated against; a change to any of them clears the memo.
DEPENDS_ON = frozenset({
    "DATA_ARCH", "DATABASES", "CACHES", "DATABASE_ROUTERS", "TENANT_MODEL", "PUBLIC_SCHEMA_NAME",
    "MIDDLEWARE",
})


def clear_cache(*, setting: str | None = None, **kwargs: Any) -> None:
    """Forget every memoised section (a ``setting_changed`` receiver; also callable directly)."""
    if setting is None or setting in DEPENDS_ON:
        _memo.clear()


def _load(section: str, cls: type[T]) -> T:
    """The ``cls`` dataclass for ``DATA_ARCH[section]``, validated once and memoised."""
    cached = _memo.get(section)
    if cached is not None and cached[0] is _settings_identity():
        return cached[1]
    instance = _build(section, cls)
    _memo[section] = (_settings_identity(), instance)
    return instance


def _settings_identity() -> Any:
    # The wrapped settings object: a new one (override_settings, a test runner swapping settings
    # without the signal) never sees another's memo.
    return getattr(settings, "_wrapped", None)


def _build(section: str, cls: type[T]) -> T:
    """Build the ``cls`` dataclass from ``DATA_ARCH[section]``, validating every key."""
    value = raw().get(section, {})
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise SettingError(f"DATA_ARCH[{section!r}] must be a dict, got {type(value).__name__}")
    fields = {f.name.upper(): f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise SettingError(
            f"DATA_ARCH[{section!r}] has unknown key(s) {', '.join(map(repr, unknown))}; "
            f"known keys: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for key, item in value.items():
        validate: Validator | None = fields[key].metadata.get("validate")
        kwargs[fields[key].name] = validate(_name(section, key), item) if validate else item
    instance = cls(**kwargs)
    post = getattr(instance, "validate", None)
    if post is not None:
        post()
    return instance


def _field(default: Any, validate: Validator, *, factory: bool = False) -> Any:
    if factory:
        return dataclasses.field(default_factory=default, metadata={"validate": validate})
    return dataclasses.field(default=default, metadata={"validate": validate})


# --------------------------------------------------------------------------- sections


def _callable_path(name: str, value: Any) -> str | None:
    """A dotted path to a callable (imported to check it), or None."""
    if value is None:
        return None
    from django.utils.module_loading import import_string

    path = string(name, value)
    try:
        target = import_string(path)
    except ImportError as exc:
        raise SettingError(f"{name} is {path!r}, which cannot be imported: {exc}") from None
    if not callable(target):
        raise SettingError(f"{name} is {path!r}, which is not callable")
    return path


def _labels(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple, frozenset, set)):
        raise SettingError(f"{name} must be a list of host labels such as ['www'], got {value!r}")
    return tuple(string(f"{name}[{i}]", item).lower() for i, item in enumerate(value))


@dataclasses.dataclass(frozen=True)
class TenancySettings:
    #: Request header that names the tenant (``None``: off). The client chooses its value, so
    #: it is honoured only when the host names no tenant and ``AUTHORIZE`` allows it.
    header: str | None = _field(None, optional_string)
    #: ``"path.to.callable"`` taking ``(request, tenant)`` and returning True when the request
    #: may act for that tenant through ``HEADER``; required when ``HEADER`` is set.
    authorize: str | None = _field(None, _callable_path)
    #: Resolve the row-level tenant from the left-most subdomain of the host.
    subdomain: bool = _field(False, boolean)
    #: Left-most host labels that never name a tenant with ``SUBDOMAIN`` (IP hosts never do).
    non_tenant_subdomains: tuple[str, ...] = _field(("www",), _labels)
    #: The PostgreSQL custom setting that carries the tenant id for Row-Level Security.
    rls_setting: str = _field("data_arch.tenant_id", custom_setting_name)
    #: The setting carries the tenant id with a MAC bound to the server process, verified by a
    #: SECURITY DEFINER function the policy calls: SQL injected into one tenant's statements
    #: cannot switch to another tenant. Needs the application's statements to reach the server
    #: process the client connected to (direct connections, Django's pool, PgBouncer in session
    #: mode); takes effect for policies created by ``EnableRowLevelSecurity`` after it is set.
    signed_context: bool = _field(True, boolean)
    #: Secret of that MAC; ``None`` derives one from ``SECRET_KEY``. Stored (as HMAC pads) by
    #: ``EnableRowLevelSecurity`` in a table the application role cannot read.
    rls_secret: str | None = _field(None, optional_string)
    #: The tenant model (``"app_label.Model"``); ``None`` uses django-tenants' TENANT_MODEL.
    model: str | None = _field(None, optional_string)
    #: Field of the tenant model that the header or subdomain value is looked up by.
    lookup_field: str = _field("schema_name", string)

    def validate(self) -> None:
        if self.header is not None and self.authorize is None:
            raise SettingError(
                f"{_name('TENANCY', 'HEADER')} is {self.header!r}, but a request header is chosen "
                f"by the client: set {_name('TENANCY', 'AUTHORIZE')} to a callable "
                "(request, tenant) -> bool that decides who may use it"
            )


@dataclasses.dataclass(frozen=True)
class PartitionSettings:
    #: Months to keep created ahead of the current one.
    ahead: int = _field(3, non_negative_int)
    #: Months to keep; ``None`` keeps everything.
    retain: int | None = _field(None, optional_positive_int)
    #: What retention does with an expired partition.
    retention_mode: str = _field("drop", one_of("drop", "detach", "archive"))
    #: Schema that ``archive`` moves partitions into.
    archive_schema: str = _field("archive", string)
    #: ``lock_timeout`` for each DDL statement, in milliseconds.
    lock_timeout_ms: int = _field(100, positive_int)
    #: Attempts per DDL statement when the lock times out.
    lock_retries: int = _field(10, positive_int)
    #: Rows moved per committed batch when draining the default partition.
    drain_batch_size: int = _field(5000, positive_int)
    #: Retention detaches with ``DETACH PARTITION ... CONCURRENTLY`` (no ACCESS EXCLUSIVE on the
    #: parent). PostgreSQL refuses it while the table has a default partition, so it applies only
    #: to tables declared with ``default=False``; with a default, a plain DETACH under lock_timeout.
    detach_concurrently: bool = _field(False, boolean)
    #: Retention in ``drop`` mode drops a partition that views depend on with ``DROP ... CASCADE``,
    #: taking those views along (the plan lists them). Off: such a partition is kept and
    #: reported, and the run exits non-zero. ``partitions plan|apply --cascade`` opts in per run.
    drop_cascade: bool = _field(False, boolean)


def _weights(name: str, value: Any) -> dict[str, int]:
    if not isinstance(value, Mapping):
        raise SettingError(f"{name} must be a dict of replica alias -> weight, got {value!r}")
    return {
        database_alias(f"{name} key", alias): positive_int(f"{name}[{alias!r}]", weight)
        for alias, weight in value.items()
    }


def _router_sets(name: str, value: Any) -> tuple[dict[str, Any], ...]:
    if isinstance(value, (str, Mapping)) or not isinstance(value, (list, tuple)):
        raise SettingError(f"{name} must be a list of dicts with PRIMARY, REPLICAS and APPS, "
                           f"got {value!r}")
    sets = []
    for i, item in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(item, Mapping) or set(item) - {"PRIMARY", "REPLICAS", "APPS"}:
            raise SettingError(f"{where} must be a dict with keys PRIMARY, REPLICAS and APPS, "
                               f"got {item!r}")
        apps = item.get("APPS", ())
        if isinstance(apps, str) or not isinstance(apps, (list, tuple)) or not apps:
            raise SettingError(f"{where}['APPS'] must be a non-empty list of app labels, "
                               f"got {apps!r}")
        sets.append({
            "primary": database_alias(f"{where}['PRIMARY']", item.get("PRIMARY")),
            "replicas": database_aliases(f"{where}['REPLICAS']", item.get("REPLICAS", [])),
            "apps": tuple(string(f"{where}['APPS']", a) for a in apps),
        })
    return tuple(sets)


@dataclasses.dataclass(frozen=True)
class RouterSettings:
    #: The primary's alias; writes and migrations go here.
    primary: str = _field("default", database_alias)
    #: Replica aliases reads may go to.
    replicas: tuple[str, ...] = _field(tuple, database_aliases, factory=True)
    #: Relative read weight per replica alias (missing ones weigh 1).
    weights: dict[str, int] = _field(dict, _weights, factory=True)
    #: Further primary/replica sets: [{"PRIMARY": a, "REPLICAS": [...], "APPS": [labels]}].
    sets: tuple[dict[str, Any], ...] = _field(tuple, _router_sets, factory=True)
    #: Seconds a write's WAL token is carried to the user's next requests and tasks.
    sticky_seconds: float = _field(15.0, non_negative_number)
    #: A replica lagging more than this many seconds is skipped.
    max_lag_seconds: float = _field(10.0, positive_number)
    #: A replica more than this many bytes of WAL behind the primary is skipped (None: no limit).
    max_lag_bytes: int | None = _field(None, optional_positive_int)
    #: How long a read waits for a replica to replay the context's last write, in seconds.
    max_lsn_wait: float = _field(0.02, non_negative_number)
    #: How long a healthy probe result is trusted, in seconds (counted from the probe's end).
    health_ttl: float = _field(5.0, number_between(0.05, 3600))
    #: Longest wait of a health probe, connect included, in seconds; also the connect_timeout
    #: given to replica aliases that set none (libpq's minimum is 2).
    probe_timeout: int = _field(2, int_between(2, 60))
    #: An unhealthy replica is re-probed after HEALTH_TTL, then 2x, 4x ... up to this, seconds
    #: (None: 30 s, or HEALTH_TTL when that is longer).
    health_backoff_max: float | None = _field(None, optional(number_between(0.05, 3600)))
    #: What reads do when no replica is healthy.
    no_healthy_replica: str = _field("primary", one_of("primary", "error"))
    #: Name of the signed cookie carrying the WAL token between requests.
    cookie_name: str = _field("data_arch_wal", string)

    @property
    def backoff_ceiling(self) -> float:
        """The longest wait between probes of an unhealthy replica, in seconds."""
        if self.health_backoff_max is not None:
            return self.health_backoff_max
        return max(30.0, self.health_ttl)

    def validate(self) -> None:
        primaries = [self.primary, *(s["primary"] for s in self.sets)]
        replicas = [*self.replicas, *(r for s in self.sets for r in s["replicas"])]
        both = sorted(set(primaries) & set(replicas))
        if both:
            raise SettingError(
                f"DATA_ARCH['ROUTER']: {', '.join(map(repr, both))} is listed both as a primary "
                "and as a replica; a replica alias must point at a standby"
            )
        if len(set(primaries)) != len(primaries) or len(set(replicas)) != len(replicas):
            raise SettingError("DATA_ARCH['ROUTER']: an alias appears in more than one set")
        if self.health_backoff_max is not None and self.health_backoff_max < self.health_ttl:
            raise SettingError(
                f"DATA_ARCH['ROUTER']['HEALTH_BACKOFF_MAX'] ({self.health_backoff_max:g}) must be "
                f">= HEALTH_TTL ({self.health_ttl:g})"
            )
        unknown = sorted(set(self.weights) - set(replicas))
        if unknown:
            raise SettingError(
                f"DATA_ARCH['ROUTER']['WEIGHTS'] names {', '.join(map(repr, unknown))}, "
                "which is not in any REPLICAS list"
            )


def model_labels(name: str, value: Any) -> tuple[str, ...]:
    """A list of ``"app_label.ModelName"`` strings (whether each model exists is a check)."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise SettingError(f"{name} must be a list of 'app_label.ModelName' strings, got {value!r}")
    labels = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or item.count(".") != 1 or not all(item.split(".")):
            raise SettingError(f"{name}[{i}] must be 'app_label.ModelName', got {item!r}")
        labels.append(item.lower())
    return tuple(labels)


@dataclasses.dataclass(frozen=True)
class CacheSettings:
    #: The django-redis cache alias the helpers use.
    alias: str = _field("default", cache_alias)
    #: Default TTL in seconds.
    timeout: int = _field(300, int_between(1, 365 * 86400))
    #: Keep decoded values in an in-process L1 in front of Redis.
    l1: bool = _field(False, boolean)
    #: Key prefix in Redis.
    prefix: str = _field("da", string)
    #: Most decoded values the in-process L1 keeps (least recently used are dropped).
    l1_size: int = _field(10_000, positive_int)
    #: Most bytes (encoded size) the in-process L1 keeps; a value over a quarter of it is not kept.
    l1_max_bytes: int = _field(32 * 1024 * 1024, int_between(1024, 2**40))
    #: Longest an L1 entry is trusted, in seconds: bounds staleness if an invalidation is lost.
    l1_max_age: float = _field(5.0, number_between(0.001, 86400))
    #: How cached values are encoded: "json" (safe default) or "pickle" (opt-in, trusted Redis only).
    serializer: str = _field("json", one_of("json", "pickle"))
    #: Compress payloads of at least this many bytes with zlib; ``None`` never compresses.
    compress_min_bytes: int | None = _field(None, optional_positive_int)
    #: Seconds a loader's lease lives without its heartbeat: how long a crashed holder blocks.
    lock_timeout: float = _field(10.0, number_between(0.05, 3600))
    #: Seconds a caller waits for another caller's load of the same key before loading itself.
    lock_wait: float = _field(30.0, number_between(0.001, 86400))
    #: XFetch early-refresh aggressiveness (1.0 is the paper's optimum; 0 disables).
    xfetch_beta: float = _field(1.0, number_between(0, 100))
    #: Seconds past expiry a stale value may be served while one caller refreshes (0: never).
    stale_ttl: int = _field(0, non_negative_int)
    #: When Redis fails, run the loader and return its value (counted and logged, not raised).
    fail_open: bool = _field(True, boolean)
    #: After a Redis failure, seconds Redis is bypassed before one probe tries it again.
    retry_after: float = _field(1.0, number_between(0, 3600))
    #: A Redis call slower than this (seconds) counts as a failure: a slow Redis is bypassed too.
    latency_budget: float = _field(0.25, number_between(0.001, 60))
    #: Models whose writes invalidate ``models=[...]`` entries in every process from start-up.
    models: tuple[str, ...] = _field(tuple, model_labels, factory=True)
    #: Seconds a process spends at exit delivering invalidations Redis did not take yet.
    exit_flush: float = _field(2.0, number_between(0, 600))
    #: Queued invalidations a process keeps before collapsing them into namespace-wide ones.
    pending_max: int = _field(10_000, int_between(1, 10_000_000))
    #: Directory where undelivered invalidations outlive their process (None: a temp dir).
    spool_dir: str | None = _field(None, optional_string)


@dataclasses.dataclass(frozen=True)
class CelerySettings:
    #: Queue the data_arch tasks are sent to (None: Celery's default queue).
    queue: str | None = _field(None, optional_string)
    #: Seconds between scheduled partition maintenance runs (beat_schedule()).
    partitions_interval: float = _field(3600.0, number_between(10, 7 * 86400))
    #: Seconds between scheduled cache warming runs (None: not scheduled).
    warm_interval: float | None = _field(300.0, optional(number_between(10, 7 * 86400)))
    #: Seconds between scheduled replica health refreshes (None: not scheduled).
    health_interval: float | None = _field(30.0, optional(number_between(1, 86400)))
    #: Most tenants one job works on at once, across every worker (a Redis semaphore).
    tenant_concurrency: int = _field(4, int_between(1, 1000))
    #: Tenants enqueued per batch when a job fans out over every tenant.
    tenant_batch: int = _field(100, int_between(1, 100_000))
    #: Seconds of random delay added to each tenant's start, spreading the load.
    tenant_jitter: float = _field(5.0, number_between(0, 3600))
    #: Seconds a job's single-flight lease lives without a heartbeat (a dead worker's lapses).
    lease_seconds: float = _field(300.0, number_between(5, 86400))
    #: A job without a successful run for this many seconds is reported (data_arch.W010);
    #: None: twice its interval.
    stale_after: float | None = _field(None, optional(number_between(60, 30 * 86400)))

    def stale_seconds(self, interval: float) -> float:
        return self.stale_after if self.stale_after is not None else 2 * interval

    def intervals(self) -> dict[str, float]:
        """job name -> seconds between its scheduled runs, for the jobs beat schedules."""
        jobs = {"partitions": self.partitions_interval}
        if self.warm_interval is not None:
            jobs["warm_caches"] = self.warm_interval
        if self.health_interval is not None:
            jobs["replica_health"] = self.health_interval
        return jobs


def _module_paths(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise SettingError(f"{name} must be a list of dotted module paths, got {value!r}")
    return tuple(string(f"{name}[{i}]", item) for i, item in enumerate(value))


@dataclasses.dataclass(frozen=True)
class BackfillSettings:
    #: Rows in a backfill's first batch (the size then adapts between MIN and MAX).
    batch_size: int = _field(1000, positive_int)
    #: Smallest batch: a lock timeout halves the batch down to this.
    min_batch_size: int = _field(10, positive_int)
    #: Largest batch the adaptive size grows to.
    max_batch_size: int = _field(20_000, positive_int)
    #: Time one batch should take, in milliseconds; the batch size grows or shrinks towards it.
    target_batch_ms: int = _field(200, positive_int)
    #: ``lock_timeout`` of every batch statement, in milliseconds; the batch's
    #: ``statement_timeout`` is set to the same value, so no batch holds row locks longer.
    lock_timeout_ms: int = _field(500, positive_int)
    #: Consecutive lock or statement timeouts of one batch before the run stops (failed).
    lock_retries: int = _field(10, positive_int)
    #: No batch starts while a replica's replay lag plus the batch's expected WAL would exceed
    #: this many bytes.
    max_lag_bytes: int = _field(64 * 1024 * 1024, positive_int)
    #: No batch starts while a replica lags more than this many seconds.
    max_lag_seconds: float = _field(5.0, positive_number)
    #: Pause between batches, in seconds (on top of throttling).
    pause_seconds: float = _field(0.0, non_negative_number)
    #: Extra pause between batches while autovacuum works on the table, in seconds.
    vacuum_pause_seconds: float = _field(0.1, non_negative_number)
    #: Modules imported (besides each app's ``backfills.py``) to find registered backfills.
    modules: tuple[str, ...] = _field(tuple, _module_paths, factory=True)
    #: ``lock_timeout`` of each DDL statement run by the migration guard, in milliseconds.
    ddl_lock_timeout_ms: int = _field(100, positive_int)
    #: Attempts per DDL statement when its lock times out (with backoff between them).
    ddl_retries: int = _field(30, positive_int)
    #: Longest wait between two DDL attempts, in seconds.
    ddl_backoff_max: float = _field(1.0, positive_number)
    #: Run every migration's DDL through the guard (lock_timeout, retries, refusing
    #: operations that rewrite or lock a table that already exists).
    ddl_guard: bool = _field(False, boolean)

    def validate(self) -> None:
        if not self.min_batch_size <= self.batch_size <= self.max_batch_size:
            raise SettingError(
                "DATA_ARCH['BACKFILLS']: need MIN_BATCH_SIZE <= BATCH_SIZE <= MAX_BATCH_SIZE, got "
                f"{self.min_batch_size}, {self.batch_size}, {self.max_batch_size}"
            )


def tenancy_settings() -> TenancySettings:
    return _load("TENANCY", TenancySettings)


def partition_settings() -> PartitionSettings:
    return _load("PARTITIONS", PartitionSettings)


def router_settings() -> RouterSettings:
    return _load("ROUTER", RouterSettings)


def cache_settings() -> CacheSettings:
    return _load("CACHE", CacheSettings)


def celery_settings() -> CelerySettings:
    return _load("CELERY", CelerySettings)


@dataclasses.dataclass(frozen=True)
class MetricsSettings:
    #: Register data_arch's metrics on prometheus_client's registry when it is installed.
    enabled: bool = _field(True, boolean)
    #: Seconds the state gauges (replicas, partitions, maintenance) are reused between scrapes.
    cache_seconds: float = _field(15.0, number_between(0, 3600))


def metrics_settings() -> MetricsSettings:
    return _load("METRICS", MetricsSettings)


def backfill_settings() -> BackfillSettings:
    return _load("BACKFILLS", BackfillSettings)


def configuration_errors() -> list[str]:
    """Every problem in ``DATA_ARCH``, one message each; empty when valid."""
    try:
        raw()
    except SettingError as exc:
        return [str(exc)]
    errors = []
    for load in (tenancy_settings, partition_settings, router_settings, cache_settings,
                 celery_settings, metrics_settings, backfill_settings):
        try:
            load()
        except SettingError as exc:
            errors.append(str(exc))
    return errors
