#!/usr/bin/env python3
"""The two commands of the README.

    python3 scripts/dev.py demo   # start services, migrate, seed, serve the demo + a Celery worker
    python3 scripts/dev.py test   # the whole test suite, on every PostgreSQL version available
    python3 scripts/dev.py bench [--quick] [NAME ...]   # data_arch next to the alternatives

Needs only Python 3.11+ with venv and pip: the first run creates ``.venv`` and installs the
project with its test extras into it, then re-runs itself there.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("DATA_ARCH_VENV", ROOT / ".venv"))
# The bench extra holds the alternatives the benchmarks measure next to data_arch; CI runs
# the benchmarks quick mode as a smoke test, so one virtualenv carries both.
EXTRAS = "test,bench"


def _venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def bootstrap() -> None:
    """Create the virtualenv, install the project into it, and re-exec there.

    SIGTERM, SIGHUP or Ctrl-C during the install stop pip (and what it runs) too, and exit.
    """
    if sys.version_info < (3, 11):
        sys.exit(f"data_arch needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    from harness.processes import Children, Terminated, signals_raise

    signals_raise()
    children = Children()
    try:
        _install(children)
    except KeyboardInterrupt as exc:
        children.stop()
        print(f"stopped while installing into {VENV}; the next run completes it", file=sys.stderr)
        sys.exit(exc.exit_code if isinstance(exc, Terminated) else 130)
    os.execv(str(_venv_python()), [str(_venv_python()), str(Path(__file__).resolve()), *sys.argv[1:]])


def _install(children) -> None:  # children: harness.processes.Children
    python = _venv_python()
    stamp = VENV / ".data_arch-installed"
    # A virtualenv whose making was cut short has its python but not pip: make it again.
    if not python.exists() or not (stamp.exists() or _has_pip(children, python)):
        print(f"creating virtualenv {VENV}", flush=True)
        returncode = children.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=False)
        if returncode != 0 or not python.exists():
            sys.exit(
                "could not create a virtualenv: install Python's venv module "
                "(Debian/Ubuntu: apt-get install python3-venv) and run again"
            )
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + EXTRAS.encode()).hexdigest()
    if not stamp.exists() or stamp.read_text() != digest:
        print("installing django-data-arch and its test dependencies into the virtualenv", flush=True)
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        children.run([*pip, "--upgrade", "pip"], check=False)
        if children.run([*pip, "-e", f"{ROOT}[{EXTRAS}]"], check=False) != 0:
            sys.exit("pip install failed; see the messages above")
        stamp.write_text(digest)


def _has_pip(children, python: Path) -> bool:
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    return children.run([str(python), "-m", "pip", "--version"], check=False, **quiet) == 0


# --------------------------------------------------------------------------- test


def postgres_choices() -> list[str]:
    from harness.services import ServiceError, find_postgres

    wanted = os.environ.get("DATA_ARCH_POSTGRES")
    if wanted:
        return [wanted]
    choices = []
    for choice in ("system", "embedded"):
        try:
            found = find_postgres(choice)
        except ServiceError:
            continue
        if all(found.version != find_postgres(c).version for c in choices):
            choices.append(choice)
    return choices


def run_tests(args: list[str]) -> int:
    from harness.processes import Children, Terminated, signals_raise
    from harness.services import ServiceError, describe_redis_server, find_postgres, find_redis_server

    if not os.environ.get("REDIS_URL"):
        try:
            print(f"Redis server: {describe_redis_server(find_redis_server())}", flush=True)
        except ServiceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    if os.environ.get("DATABASE_URL"):
        runs = [("DATABASE_URL", {})]
    else:
        choices = postgres_choices()
        if not choices:
            print("error: no PostgreSQL binaries found", file=sys.stderr)
            return 1
        runs = [
            (find_postgres(choice).describe(), {"DATA_ARCH_POSTGRES": choice}) for choice in choices
        ]
    signals_raise()
    results = []
    for number, (label, extra_env) in enumerate(runs):
        print(f"\n=== tests on {label} ===", flush=True)
        started = time.monotonic()
        env = {**os.environ, **extra_env}
        env.pop("DATA_ARCH_VERSION_INDEPENDENT_RAN", None)
        if number:  # tests marked version_independent ran in the first pass
            env["DATA_ARCH_VERSION_INDEPENDENT_RAN"] = runs[0][0]
        children = Children()
        try:
            rc = children.popen([sys.executable, "-m", "pytest", *args], cwd=ROOT, env=env).wait()
        except KeyboardInterrupt as exc:
            # pytest stops its worker and services on SIGTERM too; give its teardown time.
            children.stop(timeout=60)
            return exc.exit_code if isinstance(exc, Terminated) else 130
        results.append((label, rc, time.monotonic() - started))
    print("\n=== summary ===")
    for label, rc, seconds in results:
        print(f"{'passed' if rc == 0 else 'FAILED'}  {label}  ({seconds:.0f}s)")
    return max(rc for _, rc, _ in results)


# --------------------------------------------------------------------------- bench

BENCH = ROOT / "bench"


def benchmarks() -> list[str]:
    return sorted(p.stem for p in BENCH.glob("*.py") if not p.stem.startswith("_"))


def run_bench(args: list[str]) -> int:
    import argparse
    import json

    from harness.processes import Children, Terminated, signals_raise
    from harness.services import apt_install

    available = benchmarks()
    parser = argparse.ArgumentParser(
        prog="dev.py bench",
        description="Run data_arch's benchmarks next to the alternatives, write "
        "bench/results/<name>.json and a Markdown table.",
    )
    parser.add_argument("--quick", action="store_true", help="the short run of each (under a minute)")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"some of: {', '.join(available)}")
    options = parser.parse_args(args)
    unknown = sorted(set(options.names) - set(available))
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(available)}")
    names = options.names or available
    # pg_partman for the partition benchmarks (Debian's package for the system PostgreSQL 15);
    # without it those comparisons are reported as not measured, with the reason.
    partman = Path("/usr/share/postgresql/15/extension/pg_partman.control")
    if not partman.exists() and apt_install("postgresql-15-partman"):
        print("installed postgresql-15-partman", flush=True)
    results = BENCH / "results" / ("quick" if options.quick else "")
    results.mkdir(parents=True, exist_ok=True)
    signals_raise()
    outcomes = []
    for name in names:
        print(f"\n=== bench {name}{' (quick)' if options.quick else ''} ===", flush=True)
        command = [sys.executable, str(BENCH / f"{name}.py"), "--result", str(results / f"{name}.json")]
        if options.quick:
            command.append("--quick")
        started = time.monotonic()
        children = Children()
        try:
            rc = children.popen(command, cwd=ROOT, env=dict(os.environ)).wait()
        except KeyboardInterrupt as exc:
            children.stop(timeout=30)
            return exc.exit_code if isinstance(exc, Terminated) else 130
        outcomes.append((name, rc, time.monotonic() - started))
    sys.path.insert(0, str(BENCH))
    from _common import render_rows

    tables = []
    for path in sorted(results.glob("*.json")):
        result = json.loads(path.read_text())
        if isinstance(result.get("rows"), list):  # older formats are left out
            tables.append(render_rows(result, with_header=not tables))
    measured = [r for r in (json.loads(p.read_text()) for p in sorted(results.glob("*.json")))
                if "machine" in r]
    machines = sorted({
        f"{r['machine'].get('cpus')} CPUs, {r['machine'].get('system', '')}, Python "
        f"{r['machine'].get('python', '?')}, PostgreSQL {r['machine'].get('postgres', '?')}"
        for r in measured
    })
    loads = [r["machine"]["load_1min"] for r in measured if "load_1min" in r["machine"]]
    dates = sorted(r["measured_at"][:10] for r in measured if "measured_at" in r)
    table = "\n".join(tables)
    (results / "README.md").write_text(
        f"# Benchmark results{' (quick mode)' if options.quick else ''}\n\n"
        f"Written by `python3 scripts/dev.py bench{' --quick' if options.quick else ''}`"
        f" on {'; '.join(machines) or 'this machine'}"
        + (f", measured {dates[0]}" + (f" to {dates[-1]}" if dates[-1] != dates[0] else "")
           if dates else "")
        + (f", 1-minute load average {min(loads)}-{max(loads)} when each began" if loads else "")
        + ". Ratio: data_arch's figure over the alternative's. Per benchmark, its command and "
        "raw figures are in `<name>.json` next to this file.\n\n" + table + "\n"
    )
    print("\n=== summary ===")
    for name, rc, seconds in outcomes:
        print(f"{'ran   ' if rc == 0 else 'FAILED'}  {name}  ({seconds:.0f}s)")
    print(f"table: {(results / 'README.md').relative_to(ROOT)}")
    return 1 if any(rc for _, rc, _ in outcomes) else 0


# --------------------------------------------------------------------------- demo


def _wait_http(url: str, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status
        except Exception:  # noqa: BLE001 -- not up yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def run_demo(args: list[str]) -> int:
    import argparse

    from harness.processes import Children, Terminated, signals_deferred, signals_raise
    from harness.services import ServiceError, free_port, start_services

    parser = argparse.ArgumentParser(prog="dev.py demo")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--check", action="store_true", help="start, fetch the home, admin and /metrics pages, stop"
    )
    options = parser.parse_args(args)
    # SIGTERM, SIGHUP and Ctrl-C all end up in the finally below, which stops every child
    # process group (the Celery worker with its pool, runserver) and then the services.
    signals_raise()
    env_file = ROOT / ".services.env"
    children = Children()
    services = None
    try:
        services = start_services()
        env_file.write_text("".join(f"{k}={v}\n" for k, v in services.environ().items()))
        env = {**os.environ, **services.environ(), "DJANGO_SETTINGS_MODULE": "example_project.settings"}
        # Beat's first partition maintenance within a minute (hourly in a real deployment).
        env.setdefault("DATA_ARCH_PARTITIONS_INTERVAL", "20")
        manage = [sys.executable, str(ROOT / "manage.py")]
        children.run([*manage, "migrate_schemas", "--noinput", "-v", "0"], env=env, cwd=ROOT)
        children.run([*manage, "demo_seed"], env=env, cwd=ROOT)
        port = options.port if options.port and _port_free(options.port) else free_port()
        logdir = ROOT / "var" / "log"
        logdir.mkdir(parents=True, exist_ok=True)
        schedule = logdir / "celerybeat-schedule"
        with open(logdir / "worker.log", "ab") as worker_log, \
                open(logdir / "beat.log", "ab") as beat_log, \
                open(logdir / "web.log", "ab") as web_log:
            servers = [
                children.popen(
                    [sys.executable, "-m", "celery", "-A", "example_project", "worker",
                     "--loglevel=INFO", "--concurrency=2"],
                    env=env, cwd=ROOT, stdout=worker_log, stderr=subprocess.STDOUT,
                ),
                children.popen(
                    [sys.executable, "-m", "celery", "-A", "example_project", "beat",
                     "--loglevel=INFO", "-s", str(schedule)],
                    env=env, cwd=ROOT, stdout=beat_log, stderr=subprocess.STDOUT,
                ),
                children.popen(
                    [*manage, "runserver", f"127.0.0.1:{port}", "--noreload"],
                    env=env, cwd=ROOT, stdout=web_log, stderr=subprocess.STDOUT,
                ),
            ]
        base = f"http://localhost:{port}"
        _wait_http(base + "/")
        print(
            f"\ndata_arch demo is up\n"
            f"  public site  {base}/\n"
            f"  tenants      http://acme.localhost:{port}/  http://globex.localhost:{port}/"
            f"  http://initech.localhost:{port}/\n"
            f"  admin        {base}/admin/   (login admin / admin)\n"
            f"  metrics      {base}/metrics\n"
            f"  services\n    " + services.describe().replace("\n", "\n    ") + "\n"
            f"  logs         {logdir}/web.log, {logdir}/worker.log, {logdir}/beat.log\n"
            f"  processes    worker {servers[0].pid}, beat {servers[1].pid}, web {servers[2].pid}"
            f" (demo {os.getpid()})\n"
            f"  manage.py in another shell reaches these services through .services.env\n",
            flush=True,
        )
        if options.check:
            for path in ("/", "/admin/login/", "/metrics"):
                status = _wait_http(base + path)
                print(f"{status} {base}{path}")
                if status != 200:
                    return 1
            code = (
                "import django; django.setup();"
                "from example_project.shop.tasks import ping;"
                "print('celery worker answered:', ping.delay().get(timeout=60))"
            )
            children.run([sys.executable, "-c", code], env=env, cwd=ROOT)
            # Beat, not the seed, creates the tenants' partitions: wait for its first run.
            code = (
                "import time, django; django.setup();"
                "from data_arch.models import MaintenanceRun;"
                "from example_project.customers.models import Client;"
                "want = set(Client.objects.exclude(schema_name='public')"
                ".values_list('schema_name', flat=True));"
                "deadline = time.monotonic() + 120\n"
                "while True:\n"
                " done = set(MaintenanceRun.objects.filter(job='partitions', outcome='ok',"
                " tenant__in=want).values_list('tenant', flat=True))\n"
                " if done == want or time.monotonic() > deadline: break\n"
                " time.sleep(1)\n"
                "print(f'beat ran partition maintenance for {len(done)} of {len(want)} tenants')\n"
                "raise SystemExit(0 if done == want else 1)"
            )
            children.run([sys.executable, "-c", code], env=env, cwd=ROOT)
            return 0
        print("Ctrl-C (or SIGTERM, SIGHUP) stops everything.", flush=True)
        while all(server.poll() is None for server in servers):
            time.sleep(0.5)
        print("a demo process exited; stopping", file=sys.stderr)
        return 1
    except Terminated as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        return 0
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        with signals_deferred():
            children.stop()
            env_file.unlink(missing_ok=True)
            if services is not None:
                services.stop()


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("demo", "test", "bench"):
        print(__doc__, file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    if not _in_venv():
        bootstrap()
    command, args = sys.argv[1], sys.argv[2:]
    runner = {"test": run_tests, "bench": run_bench, "demo": run_demo}[command]
    return runner(args)


if __name__ == "__main__":
    sys.exit(main())
