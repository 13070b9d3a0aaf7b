"""A real, throwaway PostgreSQL 15 server on 127.0.0.1 for the trail store tests.

Why real: the PostgreSQL store's guarantees (REVOKEd privileges, row and TRUNCATE triggers, a
gapless index under a row lock) are enforced by the server, so only a server can show they hold.
The server is Debian's ``postgresql-15`` (scripts/setup-system-packages.sh installs it), run from a
temporary directory with its own port, TCP on loopback only, and removed afterwards.

PostgreSQL refuses to run as root. Under root the cluster is owned by an unprivileged OS user
(``postgres`` when the package created it, else ``kubepcitest``, created on demand) and the binaries
run through ``runuser``; as any other user they run directly.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = [
    "PG_BIN",
    "PostgresBinariesMissingError",
    "PostgresServer",
    "e2e_optional",
    "find_pg_bin",
]

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "postgres"
_TEST_OS_USER = "kubepcitest"
_READY_TIMEOUT_S = 30.0


class PostgresBinariesMissingError(RuntimeError):
    """initdb/pg_ctl are not installed; the message says how to get them."""


def e2e_optional() -> bool:
    """True when a missing server should skip instead of fail (developer machines, never CI)."""
    return os.environ.get("KUBEPCI_E2E_OPTIONAL") == "1"


def find_pg_bin() -> Path:
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / tool).is_file():
            raise PostgresBinariesMissingError(
                f"{PG_BIN / tool} not found: run scripts/setup-system-packages.sh (apt-get install postgresql)"
            )
    return PG_BIN


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _os_user() -> str | None:
    """The unprivileged account to run the server as, or None to run as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in (SUPERUSER, _TEST_OS_USER):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", _TEST_OS_USER],
        check=True, capture_output=True,
    )
    return _TEST_OS_USER


@dataclass(frozen=True, slots=True)
class _Run:
    os_user: str | None

    def __call__(self, argv: list[str], *, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        if self.os_user is not None:
            argv = ["runuser", "-u", self.os_user, "--", *argv]
        return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout)


class PostgresServer:
    """Start on ``__enter__`` (initdb + pg_ctl start), stop and delete on ``__exit__``.

    ``durable=False`` (the test default) turns off fsync: the tests check semantics, not crash
    safety, and fsync dominates their run time. Benchmarks pass ``durable=True``.
    """

    def __init__(self, *, durable: bool = False) -> None:
        self.bin = find_pg_bin()
        self.durable = durable
        self.port = 0
        self.host = "127.0.0.1"
        self._dir: Path | None = None
        self._run = _Run(_os_user())

    @property
    def data_dir(self) -> Path:
        if self._dir is None:
            raise RuntimeError("server not started")
        return self._dir / "data"

    def url(self, user: str = SUPERUSER, database: str = "postgres", **params: str) -> str:
        query = "&".join(f"{key}={value}" for key, value in params.items())
        return f"postgresql://{user}@{self.host}:{self.port}/{database}" + (f"?{query}" if query else "")

    def __enter__(self) -> PostgresServer:
        self._dir = Path(tempfile.mkdtemp(prefix="kubepci-pg-"))
        if self._run.os_user is not None:
            entry = pwd.getpwnam(self._run.os_user)
            os.chown(self._dir, entry.pw_uid, entry.pw_gid)
        try:
            self._init()
            self._start()
        except BaseException:
            self._cleanup()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self._run([str(self.bin / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "immediate", "-w"])
        finally:
            self._cleanup()

    def _cleanup(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _init(self) -> None:
        result = self._run([
            str(self.bin / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust",
            "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions",
            *([] if self.durable else ["--no-sync"]),
        ])
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed ({result.returncode}): {result.stderr.strip()}")

    def _start(self) -> None:
        options = [
            "-c listen_addresses=127.0.0.1",
            "-c unix_socket_directories=''",
            "-c max_connections=50",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        last_error = ""
        for _attempt in range(3):  # a port picked free can be taken before the server binds it
            self.port = _free_port()
            log = self._dir / "server.log" if self._dir else Path(os.devnull)
            result = self._run([
                str(self.bin / "pg_ctl"), "start", "-D", str(self.data_dir), "-l", str(log), "-w",
                "-t", str(int(_READY_TIMEOUT_S)), "-o", " ".join([*options, f"-p {self.port}"]),
            ], timeout=_READY_TIMEOUT_S + 10)
            if result.returncode == 0 and self._accepting():
                return
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            last_error = f"{result.stderr.strip()}\n{tail}"
            self._run([str(self.bin / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "immediate"])
        raise RuntimeError(f"PostgreSQL did not start: {last_error}")

    def _accepting(self) -> bool:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=1.0):
                return True
            time.sleep(0.1)
        return False
