"""Scenario fixtures: the example project served by gunicorn in a process of its own, on
committed data in the test database, with a load generator that records every request.

The tests write outside pytest-django's per-test transaction (``live_db``), since the server
process reads and writes through connections of its own; each scenario cleans up after itself.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.db import connections

from harness.services import free_port

ROOT = Path(__file__).resolve().parents[2]


#: Every scenario: committed data (the server reads it through connections of its own).
LIVE = pytest.mark.django_db(transaction=True, databases=["default", "replica"])


@pytest.fixture(scope="session")
def live_db(django_db_setup, django_db_blocker):
    """Database access outside test transactions (writes commit)."""
    with django_db_blocker.unblock():
        yield


def database_settings(**changes: dict) -> dict:
    """The test run's ``DATABASES`` (test database names), JSON-able, with per-alias changes."""
    result = {}
    for alias in ("default", "replica"):
        settings = dict(connections.settings[alias])
        settings.pop("TEST", None)
        settings.update(changes.get(alias, {}))
        result[alias] = settings
    return result


@dataclass
class Result:
    started: float
    seconds: float
    status: int
    body: dict = field(default_factory=dict)
    error: str = ""


class ExampleServer:
    """gunicorn serving ``example_project.wsgi`` (one process, ``threads`` threads)."""

    def __init__(self, databases: dict, data_arch: dict | None = None, threads: int = 8,
                 env: dict | None = None) -> None:
        self.port = free_port()
        environ = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.reliability.server_settings",
            "RELIABILITY_DATABASES": json.dumps(databases),
            "RELIABILITY_DATA_ARCH": json.dumps(data_arch or {}),
            "PYTHONPATH": str(ROOT),
            **(env or {}),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "example_project.wsgi:application",
             "--bind", f"127.0.0.1:{self.port}", "--workers", "1", "--threads", str(threads),
             "--timeout", "120", "--graceful-timeout", "5", "--log-level", "warning"],
            cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in iter(self.process.stdout.readline, b""):
            self.output.append(line.decode(errors="replace"))

    def wait_ready(self, host: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError("the server exited:\n" + "".join(self.output[-50:]))
            with contextlib.suppress(OSError):
                if self.request("GET", "/api/stats", host).status == 200:
                    return
            time.sleep(0.2)
        raise AssertionError("the server did not answer:\n" + "".join(self.output[-50:]))

    def request(self, method: str, path: str, host: str, data: dict | None = None,
                headers: dict | None = None, timeout: float = 60) -> Result:
        """One request on a new connection; ``status`` 0 and ``error`` when it failed."""
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        all_headers = {"Host": host, **(headers or {})}
        body = None
        if data is not None:
            body = urllib.parse.urlencode(data)
            all_headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=all_headers)
            response = conn.getresponse()
            raw = response.read()
            status = response.status
            self.last_headers = response.getheaders()
        except OSError as exc:
            return Result(started, time.monotonic() - started, 0, error=repr(exc))
        finally:
            conn.close()
        try:
            parsed = json.loads(raw) if raw.startswith(b"{") else {"text": raw.decode()}
        except ValueError:
            parsed = {"text": raw.decode(errors="replace")}
        return Result(started, time.monotonic() - started, status, parsed)

    def metric(self, host: str, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        text = self.request("GET", "/metrics", host).body.get("text", "")
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{"):
                continue
            head, _, value = line.rpartition(" ")
            if all(f'{key}="{wanted}"' in head for key, wanted in labels.items()):
                total += float(value)
        return total

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, 15)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(10)
        self._reader.join(5)


@pytest.fixture
def example_server() -> Iterator[Callable[..., ExampleServer]]:
    """``example_server(databases, data_arch=..., threads=...)`` starts one; all are stopped."""
    started: list[ExampleServer] = []

    def start(databases: dict, data_arch: dict | None = None, threads: int = 8,
              env: dict | None = None, host: str = "tenant-a.localhost") -> ExampleServer:
        server = ExampleServer(databases, data_arch, threads, env)
        started.append(server)
        server.wait_ready(host)
        return server

    yield start
    for server in started:
        server.stop()
        print(f"--- server on port {server.port}, last lines:\n" + "".join(server.output[-15:]))


class Load:
    """Threads that call ``step(worker, i)`` (returning a Result) until told to stop."""

    def __init__(self, step: Callable[[int, int], Result], workers: int) -> None:
        self.step = step
        self.results: list[tuple[str, Result]] = []
        self.phase = "start"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(w,)) for w in range(workers)]

    def _run(self, worker: int) -> None:
        i = 0
        while not self._stop.is_set():
            phase = self.phase
            result = self.step(worker, i)
            with self._lock:
                self.results.append((phase, result))
            i += 1

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(120)

    def count(self, phase: str | None = None) -> int:
        with self._lock:
            return sum(1 for p, _ in self.results if phase is None or p == phase)

    def run_phase(self, phase: str, min_seconds: float, min_requests: int = 0,
                  max_seconds: float = 60, until: Callable[[], bool] | None = None) -> None:
        """Label requests ``phase`` for at least ``min_seconds`` and ``min_requests``."""
        self.phase = phase
        started = time.monotonic()
        while True:
            elapsed = time.monotonic() - started
            done = elapsed >= min_seconds and self.count(phase) >= min_requests
            if done and (until is None or until()):
                return
            if elapsed >= max_seconds:
                return
            time.sleep(0.05)


def latency_line(results: list[Result]) -> str:
    seconds = sorted(r.seconds * 1000 for r in results)
    if not seconds:
        return "no requests"
    p99 = seconds[min(len(seconds) - 1, int(len(seconds) * 0.99))]
    return (f"{len(seconds)} requests, p50 {statistics.median(seconds):.1f} ms, "
            f"p99 {p99:.1f} ms, max {seconds[-1]:.0f} ms")


def tenant_hosts(schemas) -> dict[str, str]:
    """A Domain per tenant schema (``tenant_a`` -> ``tenant-a.localhost``), created if missing."""
    from example_project.customers.models import Client, Domain

    hosts = {}
    for schema in schemas:
        host = f"{schema.replace('_', '-')}.localhost"
        client = Client.objects.get(schema_name=schema)
        Domain.objects.get_or_create(domain=host, defaults={"tenant": client, "is_primary": True})
        hosts[schema] = host
    return hosts
