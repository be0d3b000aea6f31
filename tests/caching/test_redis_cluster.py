"""On a real three-node Redis Cluster: a namespace's keys share a slot, nothing crosses slots."""

import threading
import time

import pytest

from data_arch.caching import CacheAside, metrics, namespace
from data_arch.caching.engine import Spec
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


def test_every_namespace_keeps_its_keys_in_one_slot(cluster_engine):
    client = cluster_engine.client()
    slots = set()
    for n in range(12):
        ns = namespace(Tenant(pk=n, schema_name=f"tenant_{n}"))
        digest = argument_digest(("report", n))
        loads = []
        for _ in range(2):
            assert cluster_engine.get_or_load(
                ns, digest, SPEC, lambda loads=loads, n=n: loads.append(1) or {"n": n}
            ) == {"n": n}
        assert len(loads) == 1
        keys = [
            *cluster_engine.generation_keys(ns, SPEC),
            ns.value_key("report", digest),
            ns.lock_key("report", digest),
        ]
        key_slots = {client.keyslot(key) for key in keys}
        assert len(key_slots) == 1, keys
        slots |= key_slots
        cluster_engine.bump([ns.tag_generation("pricing")])
        assert cluster_engine.get_or_load(ns, digest, SPEC, lambda: "after flush") == "after flush"
    nodes = {
        client.get_node_from_key(namespace(Tenant(pk=n, schema_name=f"tenant_{n}")).slot).name
        for n in range(12)
    }
    assert len(slots) > 1 and len(nodes) > 1, "namespaces should spread over the cluster"


def test_one_loader_per_key_on_the_cluster(cluster_engine):
    ns = namespace(Tenant(pk=1, schema_name="tenant_1"))
    digest = argument_digest("busy")
    barrier = threading.Barrier(16)
    loads, results = [], []

    def loader():
        loads.append(1)
        time.sleep(0.2)
        return "value"

    def request():
        barrier.wait()
        results.append(cluster_engine.get_or_load(ns, digest, SPEC, loader))

    threads = [threading.Thread(target=request) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["value"] * 16
    assert len(loads) == 1
    assert metrics.total("error") == 0


def test_l1_invalidation_over_cluster_pubsub(cluster_engine, cache_settings):
    cache_settings(FAIL_OPEN=False, L1=True)
    assert cluster_engine.wait_for_l1()
    ns = namespace(Tenant(pk=2, schema_name="tenant_2"))
    values = iter(range(10))
    for _ in range(3):
        assert cluster_engine.get_or_load(ns, "d", SPEC, lambda: next(values)) == 0
    assert metrics.total("l1_hit") >= 1
    cluster_engine.bump([ns.model_generation("shop.order")])
    assert cluster_engine.get_or_load(ns, "d", SPEC, lambda: next(values)) == 1
