"""Hits, misses, TTL, None/falsy values, keys, tenant namespaces and bad input."""

import datetime
import decimal
import time
import uuid

import pytest
from django.core import checks

from data_arch.caching import (
    CacheAliasError,
    CacheKeyError,
    CacheSerializationError,
    cached,
    get_or_load,
    invalidate_tenant,
    metrics,
    namespace,
)
from data_arch.tenancy import Tenant, tenant_context

TENANT_A = Tenant(pk=1, schema_name="tenant_a")
TENANT_B = Tenant(pk=2, schema_name="tenant_b")


def counting(value):
    calls = []

    def loader():
        calls.append(1)
        return value

    loader.calls = calls
    return loader


def test_miss_then_hit():
    loader = counting({"n": 1})
    assert get_or_load("k", loader, 60) == {"n": 1}
    assert get_or_load("k", loader, 60) == {"n": 1}
    assert len(loader.calls) == 1
    snap = metrics.snapshot()
    assert snap["miss"] == {"default:k": 1}
    assert snap["hit"] == {"default:k": 1}
    assert snap["load_seconds"]["default:k"] >= 0


@pytest.mark.parametrize("value", [None, 0, "", [], {}, False, 0.0])
def test_none_and_falsy_values_are_cached(value):
    loader = counting(value)
    for _ in range(3):
        assert get_or_load(("falsy", repr(value)), loader, 60) == value
    assert len(loader.calls) == 1


def test_rich_values_round_trip_through_json():
    value = {
        "when": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        "day": datetime.date(2026, 1, 2),
        "money": decimal.Decimal("12.30"),
        "id": uuid.UUID(int=7),
        "pair": (1, "a"),
        "ids": {1, 2},
        "by_int": {1: "one"},
        "nan": float("inf"),
        "raw": b"\x00\xff",
    }
    assert get_or_load("rich", lambda: value, 60) == value
    assert get_or_load("rich", lambda: None, 60) == value


def test_expires_after_ttl():
    loader = counting("v")
    get_or_load("ttl", loader, 0.2)
    time.sleep(0.3)
    get_or_load("ttl", loader, 0.2)
    assert len(loader.calls) == 2


def test_redis_ttl_is_set(redis_client):
    get_or_load("ttl-key", lambda: 1, 30)
    (key,) = redis_client.keys("*:ttl-key:*}:v")
    assert 25_000 < redis_client.pttl(key) <= 30_000


def test_long_and_odd_keys_are_digested(redis_client):
    odd = "x" * 10_000 + " {brace} : ünïcode \x00 \n"
    assert get_or_load(odd, lambda: 1, 60) == 1
    assert get_or_load(odd, lambda: 2, 60) == 1
    keys = [k.decode() for k in redis_client.keys("*}:v")]
    assert len(keys) == 1 and len(keys[0]) < 200
    assert keys[0].count("{") == 1 and keys[0].count("}") == 1


def test_tenants_are_separate_namespaces():
    with tenant_context(TENANT_A):
        assert get_or_load("who", lambda: "a", 60) == "a"
    with tenant_context(TENANT_B):
        assert get_or_load("who", lambda: "b", 60) == "b"
    assert get_or_load("who", lambda: "shared", 60) == "shared"
    with tenant_context(TENANT_A):
        assert get_or_load("who", lambda: "x", 60) == "a"
    with tenant_context(TENANT_A):
        assert get_or_load("who", lambda: "x", 60, tenant=None) == "shared"
    assert namespace(None).slot == "{da:shared}"
    assert namespace(TENANT_A).slot == "{da:s=tenant_a}"


def test_invalidating_a_tenant_leaves_others_alone():
    with tenant_context(TENANT_A):
        get_or_load("k", lambda: "a1", 60)
    with tenant_context(TENANT_B):
        get_or_load("k", lambda: "b1", 60)
    invalidate_tenant(TENANT_A)
    with tenant_context(TENANT_A):
        assert get_or_load("k", lambda: "a2", 60) == "a2"
    with tenant_context(TENANT_B):
        assert get_or_load("k", lambda: "b2", 60) == "b1"


def test_decorator_keys_on_bound_arguments():
    calls = []

    @cached(60)
    def add(a, b=1):
        calls.append((a, b))
        return a + b

    assert add(1) == 2
    assert add(a=1) == 2
    assert add(1, b=1) == 2
    assert add(2) == 3
    assert calls == [(1, 1), (2, 1)]
    add.invalidate(1)
    assert add(1) == 2
    assert len(calls) == 3


def test_decorator_on_methods_uses_cache_key_of_self():
    class Account:
        def __init__(self, ident):
            self.ident = ident
            self.calls = 0

        def __cache_key__(self):
            return self.ident

        @cached(60)
        def balance(self, currency):
            self.calls += 1
            return f"{self.ident}-{currency}"

    first, again, other = Account(1), Account(1), Account(2)
    assert first.balance("EUR") == "1-EUR"
    assert again.balance("EUR") == "1-EUR"
    assert other.balance("EUR") == "2-EUR"
    assert (first.calls, again.calls, other.calls) == (1, 0, 1)


def test_classmethods_key_on_the_class():
    class Report:
        calls = 0

        @classmethod
        @cached(60)
        def build(cls, n):
            cls.calls += 1
            return n * 2

    assert Report.build(2) == 4 and Report.build(2) == 4
    assert Report.calls == 1


def test_negative_caching_remembers_listed_exceptions():
    calls = []

    class Missing(Exception):
        pass

    @cached(60, negative=Missing, negative_timeout=30)
    def find(pk):
        calls.append(pk)
        raise Missing(f"no row {pk}")

    for _ in range(3):
        with pytest.raises(Missing, match="no row 5"):
            find(5)
    assert calls == [5]


def test_other_exceptions_are_not_cached():
    calls = []

    def boom():
        calls.append(1)
        raise RuntimeError("db down")

    for _ in range(2):
        with pytest.raises(RuntimeError):
            get_or_load("boom", boom, 60)
    assert len(calls) == 2


def test_compression_round_trips(cache_settings, redis_client):
    cache_settings(COMPRESS_MIN_BYTES=100)
    value = {"text": "abc" * 1000}
    assert get_or_load("big", lambda: value, 60) == value
    assert get_or_load("big", lambda: None, 60) == value
    (key,) = redis_client.keys("*:big:*}:v")
    assert redis_client.strlen(key) < 500


def test_pickle_is_opt_in(cache_settings):
    value = {"when": datetime.timezone(datetime.timedelta(hours=2))}
    with pytest.raises(CacheSerializationError, match="datetime.timezone"):
        get_or_load("tz", lambda: value, 60)
    cache_settings(SERIALIZER="pickle")
    assert get_or_load("tz", lambda: value, 60) == value
    assert get_or_load("tz", lambda: None, 60) == value


def test_json_process_never_unpickles(cache_settings):
    cache_settings(SERIALIZER="pickle")
    get_or_load("shared-key", lambda: "from pickle", 60)
    cache_settings(SERIALIZER="json")
    assert get_or_load("shared-key", lambda: "from json", 60) == "from json"


# ----------------------------------------------------------------------------- bad input


def test_unserialisable_value_raises_naming_the_type_and_stores_nothing(redis_client):
    with pytest.raises(
        CacheSerializationError, match=r"cannot cache builtins.object at value\['x'\]"
    ):
        get_or_load("bad", lambda: {"x": object()}, 60)
    assert redis_client.keys("*:bad:*}:v") == []
    assert redis_client.keys("*}:l") == []


def test_key_function_that_raises_is_reported_at_call():
    @cached(60, key=lambda pk: {"pk": 1 / pk})
    def f(pk):
        return pk

    with pytest.raises(CacheKeyError, match="key function of .*f raised ZeroDivisionError"):
        f(0)


def test_unkeyable_argument_is_reported():
    @cached(60)
    def f(thing):
        return 1

    with pytest.raises(CacheKeyError, match="argument.* of type object"):
        f(object())


@pytest.mark.parametrize("ttl", [0, -1, -0.5])
def test_bad_ttl_fails_at_definition(ttl):
    with pytest.raises(ValueError, match="timeout must be > 0"):
        cached(ttl)
    with pytest.raises(ValueError, match="timeout must be > 0"):
        get_or_load("k", lambda: 1, ttl)


def test_unknown_alias_fails_at_definition():
    with pytest.raises(CacheAliasError, match="'nope' is not in settings.CACHES"):
        cached(60, alias="nope")


def test_bare_decorator_and_bad_options_fail_at_definition():
    with pytest.raises(TypeError, match="@cached()"):

        @cached
        def f():
            return 1

    with pytest.raises(ValueError, match="needs negative_timeout"):
        cached(60, negative=KeyError)
    with pytest.raises(ValueError, match="app_label.ModelName"):
        cached(60, models=["Order"])
    with pytest.raises(TypeError, match="tags= takes a list"):
        cached(60, tags="orders")


def test_non_django_redis_alias_is_rejected(settings):
    # Django's own Redis backend on the same Redis: a real cache, but not django-redis, whose
    # client (scripts, pipelines, raw connection) the helpers need.
    settings.CACHES = {
        **settings.CACHES,
        "builtin": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": settings.CACHES["default"]["LOCATION"],
        },
    }
    with pytest.raises(CacheAliasError, match="need django-redis"):
        cached(60, alias="builtin")


def test_checks(settings):
    from data_arch.caching.checks import check_cache as all_checks

    def check_cache():  # W404 depends on which test modules registered models late
        return [m for m in all_checks() if m.id != "data_arch.W404"]

    assert check_cache() == []
    settings.DATA_ARCH = {
        **settings.DATA_ARCH,
        "CACHE": {"ALIAS": "default", "SERIALIZER": "pickle"},
    }
    assert [m.id for m in check_cache()] == ["data_arch.W401"]
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
        },
        "builtin": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
        },
    }
    assert [m.id for m in check_cache()] == ["data_arch.W401", "data_arch.W402"]
    settings.CACHES["default"]["OPTIONS"] = {
        "CLIENT_CLASS": "django_redis.client.ShardClient",
        "SOCKET_TIMEOUT": 1,
        "SOCKET_CONNECT_TIMEOUT": 1,
    }
    assert [m.id for m in check_cache()] == ["data_arch.W401", "data_arch.W403"]
    settings.DATA_ARCH = {**settings.DATA_ARCH, "CACHE": {"ALIAS": "builtin"}}
    assert [m.id for m in check_cache()] == ["data_arch.E400"]
    assert all(isinstance(m, checks.CheckMessage) for m in check_cache())


def test_prometheus_hook_mirrors_the_counters():
    from prometheus_client import CollectorRegistry

    from data_arch.caching.prometheus import install

    registry = CollectorRegistry()
    listener = install(registry)
    try:
        get_or_load("prom", lambda: 1, 60)
        get_or_load("prom", lambda: 1, 60)
        labels = {"alias": "default", "name": "prom"}
        assert (
            registry.get_sample_value("data_arch_cache_events_total", {**labels, "event": "hit"})
            == 1
        )
        assert (
            registry.get_sample_value("data_arch_cache_events_total", {**labels, "event": "miss"})
            == 1
        )
        assert registry.get_sample_value("data_arch_cache_load_seconds_count", labels) == 1
    finally:
        metrics.remove_listener(listener)


def test_async_functions_are_refused_at_definition():
    with pytest.raises(TypeError, match="cannot cache the async function"):

        @cached(60)
        async def f():
            return 1


def test_a_remembered_failure_is_not_served_to_callers_that_did_not_ask_for_it():
    class Gone(Exception):
        pass

    def missing():
        raise Gone("no such row")

    with pytest.raises(Gone):
        get_or_load("row", missing, 60, negative=Gone, negative_timeout=30)
    assert get_or_load("row", lambda: "found", 60) == "found"


# ----------------------------------------------------------------------------- namespaces


def test_forged_tenant_names_never_share_a_namespace():
    """A schema may be named like another tenant's digest (or like a pk form): it still gets
    a namespace of its own, so it never reads the victim's values."""
    import hashlib

    victim = Tenant(pk=None, schema_name="ünïcode")
    digest = namespace(victim).label.split("=", 1)[1]
    forgeries = [
        Tenant(pk=None, schema_name=digest),  # this layout's digest form
        Tenant(pk=None, schema_name="h-" + hashlib.sha256("ünïcode".encode()).hexdigest()[:24]),
        Tenant(pk=None, schema_name="h-" + digest[1:25]),
    ]
    with tenant_context(victim):
        assert get_or_load("dashboard", lambda: "victim's", 60) == "victim's"
    for forged in forgeries:
        assert namespace(forged).slot != namespace(victim).slot
        with tenant_context(forged):
            assert get_or_load("dashboard", lambda: "forger's", 60) == "forger's"
    # A tenant known by its primary key and a schema named like that key's old form.
    assert namespace(Tenant(pk=5)).slot != namespace(Tenant(pk=None, schema_name="id-5")).slot
    with tenant_context(Tenant(pk=5)):
        assert get_or_load("dashboard", lambda: "pk 5", 60) == "pk 5"
    with tenant_context(Tenant(pk=None, schema_name="id-5")):
        assert get_or_load("dashboard", lambda: "schema id-5", 60) == "schema id-5"
    with tenant_context(Tenant(pk=None, schema_name="shared")):
        assert get_or_load("dashboard", lambda: "schema shared", 60) == "schema shared"
    assert get_or_load("dashboard", lambda: "the shared namespace", 60) == "the shared namespace"


def test_counters_outlive_the_values_under_them(redis_client):
    get_or_load("lives", lambda: 1, 600, tags=["t"], stale_ttl=100)
    (value_key,) = redis_client.keys("*:lives:*}:v")
    value_ttl = redis_client.pttl(value_key)
    counters = redis_client.keys("*:g:*")
    assert len(counters) == 2  # tenant-wide and the tag
    for counter in counters:
        assert value_ttl < redis_client.pttl(counter) < 2 * 86_400_000


def test_a_lost_counter_comes_back_larger_so_old_entries_are_never_served(redis_client):
    assert get_or_load("evicted", lambda: "old", 60, tags=["t"]) == "old"
    for counter in redis_client.keys("*:g:t:t"):
        redis_client.delete(counter)  # evicted, or expired
    assert get_or_load("evicted", lambda: "new", 60, tags=["t"]) == "new"


# ----------------------------------------------------------------------------- serializer


def test_values_come_back_with_their_own_types():
    import zoneinfo

    from django.utils.safestring import SafeString, mark_safe

    paris = zoneinfo.ZoneInfo("Europe/Paris")
    value = {
        "html": mark_safe("<b>bold</b>"),
        "local": datetime.datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=paris),
        "offset": datetime.datetime(
            2026, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=-3))
        ),
        "utc": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        "at": datetime.time(9, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=1), "CET")),
    }
    get_or_load("typed", lambda: value, 60)
    back = get_or_load("typed", lambda: None, 60)
    assert back == value
    assert type(back["html"]) is SafeString
    assert back["local"].tzinfo is paris and back["local"].fold == 1
    assert back["at"].tzinfo.tzname(None) == "CET"
    assert back["utc"].tzinfo is datetime.UTC


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("PLAIN", None),
        ("ENUM", r"cannot cache .*Status at value\[0\].*Status.OPEN.value"),
        ("NAMEDTUPLE", r"cannot cache .*Point at value\['p'\].*namedtuple"),
        ("ORDERED", r"cannot cache collections.OrderedDict at value.*plain dict"),
        ("ZONE", r"tzinfo is .*custom"),
    ],
)
def test_values_that_would_not_round_trip_are_refused_and_nothing_is_stored(
    value, message, redis_client
):
    import collections

    from example_project.shop.models import Order

    class custom(datetime.tzinfo):  # noqa: N801
        def utcoffset(self, dt):
            return datetime.timedelta(0)

    Point = collections.namedtuple("Point", "x y")
    value = {
        "PLAIN": [Order.Status.OPEN.value, tuple(Point(1, 2)), dict(collections.OrderedDict(a=1))],
        "ENUM": [Order.Status.OPEN],
        "NAMEDTUPLE": {"p": Point(1, 2)},
        "ORDERED": collections.OrderedDict(a=1),
        "ZONE": datetime.datetime(2026, 1, 1, tzinfo=custom()),
    }[value]
    if message is None:
        assert get_or_load("plain", lambda: value, 60) == value
        return
    with pytest.raises(CacheSerializationError, match=message):
        get_or_load("refused", lambda: value, 60)
    assert redis_client.keys("*:refused:*") == []


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("LOCK_TIMEOUT", 0, r"\['LOCK_TIMEOUT'\] must be between 0.05 and 3600, got 0"),
        ("LOCK_WAIT", -1, r"\['LOCK_WAIT'\] must be >= 0, got -1"),
        ("LATENCY_BUDGET", 0, r"\['LATENCY_BUDGET'\] must be between 0.001 and 60, got 0"),
        ("L1_MAX_BYTES", 10, r"\['L1_MAX_BYTES'\] must be an integer between 1024"),
        ("TIMEOUT", 0, r"\['TIMEOUT'\] must be >= 1, got 0"),
        ("PENDING_MAX", 0, r"\['PENDING_MAX'\] must be >= 1, got 0"),
        ("MODELS", "shop.Order", r"\['MODELS'\] must be a list"),
        ("MODELS", ["Order"], r"\['MODELS'\]\[0\] must be 'app_label.ModelName', got 'Order'"),
        ("RETRY_AFTER", 5000, r"\['RETRY_AFTER'\] must be between 0 and 3600, got 5000"),
    ],
)
def test_settings_out_of_range_name_the_key(settings, key, value, message):
    from data_arch.conf import SettingError, cache_settings

    settings.DATA_ARCH = {**settings.DATA_ARCH, "CACHE": {key: value}}
    with pytest.raises(SettingError, match=message):
        cache_settings()


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="models= names 'shop.Nope', which is not an installed"):
        cached(60, models=["shop.Nope"])
    with pytest.raises(ValueError, match="stale_ttl must be between 0 and 31536000"):
        get_or_load("k", lambda: 1, 60, stale_ttl=-1)
    with pytest.raises(ValueError, match="timeout must be at most a year"):
        get_or_load("k", lambda: 1, 10**9)
    with pytest.raises(TypeError, match="loader must be callable"):
        get_or_load("k", "not a function", 60)
    with pytest.raises(CacheKeyError, match=r"key\[1\] of type object"):
        get_or_load(("k", object()), lambda: 1, 60)
