import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.db import connections

from data_arch.routing import use_primary
from tests.routing.conftest import ROUTED

pytestmark = ROUTED


def routed() -> str:
    return User.objects.all().db


def test_nested_use_primary_restores_the_outer_state(streaming_replica):
    assert routed() == "replica"
    with use_primary():
        assert routed() == "default"
        with use_primary():
            assert routed() == "default"
        assert routed() == "default"
    assert routed() == "replica"


def test_decorator_on_a_sync_function(streaming_replica):
    @use_primary()
    def inside():
        return routed()

    assert inside() == "default"
    assert routed() == "replica"


def test_decorator_on_async_functions_and_through_sync_to_async(streaming_replica):
    @use_primary()
    async def pinned():
        await asyncio.sleep(0.01)  # let the other coroutine run meanwhile
        return await sync_to_async(routed)()

    async def unpinned():
        await asyncio.sleep(0.005)
        return await sync_to_async(routed)()

    async def both():
        return await asyncio.gather(pinned(), unpinned())

    assert asyncio.run(both()) == ["default", "replica"]


def test_threads_start_unpinned_unless_they_copy_the_context(streaming_replica):
    results = {}

    def work(name):
        try:
            results[name] = routed()
        finally:
            connections.close_all()

    with use_primary():
        thread = threading.Thread(target=work, args=("plain",))
        thread.start()
        thread.join()
        context = contextvars.copy_context()
        with ThreadPoolExecutor(1) as pool:
            pool.submit(context.run, work, "copied").result()
    assert results == {"plain": "replica", "copied": "default"}
