"""SIGTERM, SIGINT or SIGHUP of the demo or a test run stops every process it started.

Each run gets a marker in its environment, which every process it starts inherits (servers
started through ``runuser`` and ``pg_ctl`` included); after the signal, no process in ``/proc``
may still carry it. Redis and PostgreSQL's backends overwrite their environment with their
process title, so for those the ports the run printed must be closed as well.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARKER = "DATA_ARCH_TEST_RUN_MARKER"

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")


def _marked(token: str) -> dict[int, str]:
    """pid -> command line of every live process whose environment carries ``token``."""
    wanted = f"{MARKER}={token}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if wanted not in (entry / "environ").read_bytes().split(b"\0"):
                continue  # a zombie's environment reads empty: it is gone
            found[int(entry.name)] = (
                (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            )
        except OSError:
            continue
    return found


def _left_after(token: str, timeout: float = 10) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    while (left := _marked(token)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _ports(lines: list[str]) -> list[int]:
    """The service ports in the URLs a run printed (postgres://... and redis://...)."""
    return sorted({int(p) for p in re.findall(r"(?:postgres|redis)://[^\s/]*:(\d+)/", "".join(lines))})


def _open_ports(ports: list[int], timeout: float = 10) -> list[int]:
    def listening(port: int) -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    deadline = time.monotonic() + timeout
    while (open_ := [p for p in ports if listening(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return open_


def _kill_marked(token: str) -> None:
    for pid in _marked(token):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _start(cmd: list[str], token: str, ready: str) -> tuple[subprocess.Popen, list[str]]:
    from harness.services import find_postgres

    env = {k: v for k, v in os.environ.items() if not k.endswith("_URL")}
    env.pop("DATA_ARCH_SERVICES_RUNNING", None)
    env.setdefault("DATA_ARCH_POSTGRES", str(find_postgres().bindir))  # one run of dev.py test
    env[MARKER] = token
    process = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    for line in process.stdout:
        lines.append(line)
        if ready in line:
            return process, lines
    process.wait(30)
    pytest.fail(f"{cmd} exited with {process.returncode} before {ready!r}:\n{''.join(lines)[-3000:]}")


GRANDPARENT = (
    "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); time.sleep(300)"
)
HOLDER = """
import sys, time
sys.path.insert(0, {root!r})
from harness.processes import Children, Terminated, signals_raise

GRANDPARENT = {grandparent!r}
signals_raise()
children = Children()
try:
    # A child with a grandchild in its group, like the Celery worker and its pool.
    children.popen([sys.executable, "-c", GRANDPARENT])
    print("ready", flush=True)
    time.sleep(300)
except Terminated as exc:
    sys.exit(exc.exit_code)
except KeyboardInterrupt:
    sys.exit(130)
finally:
    children.stop()
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_children_and_their_children_stop_on_each_signal(signum):
    token = uuid.uuid4().hex
    holder, _ = _start([sys.executable, "-c", HOLDER.format(root=str(ROOT), grandparent=GRANDPARENT)], token, "ready")
    try:
        deadline = time.monotonic() + 10
        while len(_marked(token)) < 3 and time.monotonic() < deadline:  # holder, child, grandchild
            time.sleep(0.02)
        assert len(_marked(token)) == 3, _marked(token)
        holder.send_signal(signum)
        assert holder.wait(20) == (130 if signum == signal.SIGINT else 128 + signum)
        assert _left_after(token) == {}
    finally:
        holder.kill()
        _kill_marked(token)


@pytest.mark.slow
@pytest.mark.version_independent
def test_sigterm_of_the_demo_stops_every_process_it_started():
    token = uuid.uuid4().hex
    demo, lines = _start(
        [sys.executable, str(ROOT / "scripts" / "dev.py"), "demo", "--port", "0"],
        token, "stops everything",
    )
    try:
        started = _marked(token)
        commands = " ".join(started.values())
        for program in ("celery", "runserver", "postgres"):
            assert program in commands, started
        ports = _ports(lines)
        assert len(ports) == 3, lines  # primary, replica, Redis
        demo.send_signal(signal.SIGTERM)
        returncode = demo.wait(60)
        left = _left_after(token)
        assert left == {}, f"left running after SIGTERM of the demo (of {len(started)}): {left}"
        assert _open_ports(ports) == []
        assert returncode == 128 + signal.SIGTERM
    finally:
        demo.kill()
        _kill_marked(token)


@pytest.mark.slow
def test_sigterm_of_pytest_stops_its_worker_and_services():
    """``dev.py test`` runs pytest, which gets the signal: its fixtures' teardown must run.

    (``dev.py`` itself stops its pytest group as the demo stops its children: the test above
    and ``test_children_and_their_children_stop_on_each_signal`` cover that path.)"""
    token = uuid.uuid4().hex
    cmd = [
        sys.executable, str(ROOT / "scripts" / "dev.py"), "test", "-s", "-p", "no:cacheprovider",
        str(ROOT / "tests" / "harness_targets" / "held_worker.py"),
    ]
    run, lines = _start(cmd, token, "holding worker")
    try:
        started = _marked(token)
        commands = " ".join(started.values())
        for program in ("celery", "postgres", "pytest"):
            assert program in commands, started
        ports = _ports(lines)
        assert len(ports) == 3, lines
        (pytest_pid,) = (pid for pid, cmd in started.items() if "-m pytest" in cmd)
        os.kill(pytest_pid, signal.SIGTERM)
        run.wait(90)
        left = _left_after(token, timeout=30)
        assert left == {}, f"left running after SIGTERM of pytest (of {len(started)}): {left}"
        assert _open_ports(ports) == []
    finally:
        run.kill()
        _kill_marked(token)
