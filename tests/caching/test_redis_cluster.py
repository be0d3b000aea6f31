"""On a real three-node Redis Cluster: a namespace's counters share a slot (read together,
always consistent), its values spread over the cluster, and nothing crosses slots."""

import threading
import time

import pytest

from data_arch.caching import CacheAside, metrics, namespace
from data_arch.caching.engine import Call, Spec
from data_arch.caching.keys import argument_digest
from data_arch.tenancy import Tenant
from harness.services import start_redis_cluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def redis_cluster():
    cluster = start_redis_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_engine(redis_cluster, cache_settings):
    cache_settings(FAIL_OPEN=False)  # a CROSSSLOT error must fail the test, not be absorbed
    client = redis_cluster.client()
    client.flushall(target_nodes="primaries")
    engine = CacheAside("default", client=client)
    yield engine
    engine.close()
    client.close()


SPEC = Spec(name="report", timeout=60, models=("shop.order", "shop.customer"), tags=("pricing",))


def test_counters_share_a_slot_and_values_spread_over_the_cluster(cluster_engine):
    client = cluster_engine.client()
    ns = namespace(Tenant(pk=1, schema_name="tenant_1"))
    value_slots, nodes = set(), set()
    for n in range(40):
        call = Call(SPEC, argument_digest(("report", n)))
        loads = []
        for _ in range(2):
            assert cluster_engine.get_or_load(
                ns, call, lambda loads=loads, n=n: loads.append(1) or {"n": n}
            ) == {"n": n}
        assert len(loads) == 1
        keys = cluster_engine.keys_for(ns, call)
        counter_slots = {client.keyslot(key) for key in (*keys.generations, keys.positions)}
        assert len(counter_slots) == 1, keys
        own = {client.keyslot(key) for key in (keys.value, keys.lease, keys.version, keys.waiting)}
        assert len(own) == 1
        value_slots |= own
        nodes.add(client.get_node_from_key(keys.value).name)
    assert len(value_slots) > 30 and len(nodes) == 3, "one namespace's values spread out"
    cluster_engine.bump([ns.tag_generation("pricing")])
    call = Call(SPEC, argument_digest(("report", 1)))
    assert cluster_engine.get_or_load(ns, call, lambda: "after flush") == "after flush"
    assert metrics.total("error") == 0


def test_one_loader_per_key_on_the_cluster(cluster_engine):
    ns = namespace(Tenant(pk=1, schema_name="tenant_1"))
    call = Call(SPEC, argument_digest("busy"))
    barrier = threading.Barrier(16)
    loads, results = [], []

    def loader():
        loads.append(1)
        time.sleep(0.2)
        return "value"

    def request():
        barrier.wait()
        results.append(cluster_engine.get_or_load(ns, call, loader))

    threads = [threading.Thread(target=request) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["value"] * 16
    assert len(loads) == 1
    assert metrics.total("error") == 0


def test_single_key_invalidation_and_l1_over_cluster_pubsub(cluster_engine, cache_settings):
    cache_settings(FAIL_OPEN=False, L1=True)
    engine = CacheAside("default", client=cluster_engine.client())
    try:
        assert engine.wait_for_l1()
        ns = namespace(Tenant(pk=2, schema_name="tenant_2"))
        call = Call(SPEC, "d" * 40)
        values = iter(range(10))
        for _ in range(3):
            assert engine.get_or_load(ns, call, lambda: next(values)) == 0
        assert metrics.total("l1_hit") >= 1
        engine.bump([ns.model_generation("shop.order")])
        assert engine.get_or_load(ns, call, lambda: next(values)) == 1
        engine.invalidate_values([engine.keys_for(ns, call).value])
        assert engine.get_or_load(ns, call, lambda: next(values)) == 2
        assert metrics.total("error") == 0
    finally:
        engine.close()
