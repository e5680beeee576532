"""A real tracking server from `launch/tracking_server.sh` (postgres or sqlite, basic auth).

Why through the script: the tests then check what users run (initdb, pg_ctl as `postgres`
under root, the auth config, start/stop), not a second way of starting MLflow.

    with server_store(tmp_path) as store, start_server(store) as server:
        cli(..., env=server.env)          # MLFLOW_TRACKING_URI/USERNAME/PASSWORD
        with server.authorised():         # MlflowClient reads the credentials from os.environ
            MlflowClient(server.uri).search_experiments()
        server.stop(); server.start()     # a restart on the same ports and store

Everything is stopped when the block exits, also when the test failed.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "launch" / "tracking_server.sh"
USERNAME = "admin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unavailable(backend: str = "postgres", auth: bool = True) -> str | None:
    """Why such a server cannot run on this machine (a skip reason), or None."""
    if backend == "postgres":
        if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
            return "PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb)"
        if importlib.util.find_spec("psycopg2") is None:
            return "psycopg2 is not installed"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return "running as root needs a 'postgres' user to run PostgreSQL"
    if auth and importlib.util.find_spec("flask_wtf") is None:
        return "MLflow's basic-auth app needs Flask-WTF (pip install 'mlflow[auth]')"
    return None


@contextlib.contextmanager
def server_store(tmp_path: Path) -> Iterator[Path]:
    """A store folder that PostgreSQL can use, removed afterwards.

    As a normal user that is `tmp_path/server`. Under root PostgreSQL runs as `postgres`,
    which cannot enter pytest's private /tmp/pytest-of-root: then a fresh folder in /tmp
    (short, so the unix socket's path stays under the kernel's limit).
    """
    if os.geteuid() != 0 and len(str(tmp_path)) < 60:
        store = tmp_path / "server"
        store.mkdir()
        yield store
        return
    store = Path(tempfile.mkdtemp(prefix="synque-srv-", dir="/tmp"))
    try:
        yield store
    finally:
        shutil.rmtree(store, ignore_errors=True)


@dataclass
class Server:
    """A running server: `uri`, the client `env`, `stop()`/`start()`, the `logs()`."""

    store: Path
    backend: str
    auth: bool
    port: int
    pg_port: int
    password: str = field(default_factory=lambda: "pw-" + secrets.token_urlsafe(18), repr=False)
    start_seconds: list[float] = field(default_factory=list)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """What a client process needs: the URI and, with auth, the admin's credentials."""
        env = {"MLFLOW_TRACKING_URI": self.uri}
        if self.auth:
            env |= {"MLFLOW_TRACKING_USERNAME": USERNAME, "MLFLOW_TRACKING_PASSWORD": self.password}
        return env

    def _script_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
        return env | {
            "BACKEND": self.backend,
            "AUTH": "on" if self.auth else "off",
            "PORT": str(self.port),
            "PG_PORT": str(self.pg_port),
            "HOST": "127.0.0.1",
            "WORKERS": "1",
            "PYTHON": sys.executable,
            "HEALTH_TIMEOUT": "180",
            "MLFLOW_TRACKING_USERNAME": USERNAME,
            **({"MLFLOW_TRACKING_PASSWORD": self.password} if self.auth else {}),
        }

    def _script(self, command: str, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(SCRIPT), command, str(self.store)],
            env=self._script_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self) -> float:
        """Start (or restart) on the same ports and store; the seconds until /health."""
        t0 = time.perf_counter()
        proc = self._script("start", timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(
                f"launch/tracking_server.sh start failed (rc {proc.returncode}):\n"
                f"{proc.stderr[-3000:]}\n--- logs ---\n{self.logs()[-3000:]}"
            )
        self.start_seconds.append(time.perf_counter() - t0)
        return self.start_seconds[-1]

    def stop(self) -> None:
        """Stop mlflow, then postgres (the script's `stop`); forced if that fails."""
        try:
            proc = self._script("stop", timeout=120)
            if proc.returncode == 0:
                return
        except subprocess.TimeoutExpired:
            pass
        self._force_stop()

    def running(self) -> bool:
        return self._script("status", timeout=60).returncode == 0

    def _force_stop(self) -> None:
        pid_file = self.store / "mlflow.pid"
        if pid_file.exists():
            with contextlib.suppress(ValueError, OSError):
                os.killpg(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        postmaster = self.store / "pg" / "data" / "postmaster.pid"
        if postmaster.exists():  # SIGQUIT: PostgreSQL's immediate shutdown
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(postmaster.read_text().split()[0]), signal.SIGQUIT)

    def logs(self) -> str:
        """mlflow's and postgres's logs, for failure messages and secret scans."""
        parts = []
        for path in (self.store / "mlflow.log", self.store / "pg" / "postgres.log"):
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    @contextlib.contextmanager
    def authorised(self) -> Iterator[None]:
        """os.environ carries `env` inside the block (MLflow reads credentials per request)."""
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@contextlib.contextmanager
def start_server(store: Path, backend: str = "postgres", auth: bool = True) -> Iterator[Server]:
    """Run the launch script on free ports with `store`; stop everything on exit."""
    server = Server(Path(store), backend, auth, port=free_port(), pg_port=free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def running_server(
    tmp_path: Path, backend: str = "postgres", auth: bool = True
) -> Iterator[Server]:
    """`start_server` in a `server_store`; skips the test where such a server cannot run."""
    import pytest

    if (reason := unavailable(backend, auth)) is not None:
        pytest.skip(reason)
    with server_store(tmp_path) as store, start_server(store, backend, auth) as server:
        yield server
