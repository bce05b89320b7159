"""Fixtures for the admin API suite: the real `tachyon solo` binary, fetched over real HTTP.

Each test gets its own server process on free loopback ports:
  * AMPS over TCP on [transport] amps_tcp (driven with ../conformance/rawamps.py, stdlib only)
  * the admin API on [admin] address

Server contract under test (see net/src/admin/): GET /health, /health/live, /amps/instance[/...],
/metrics; SIGTERM -> exit status 0.

Environment:
  TACHYON_BIN   server binary (default: <repo>/target/release/tachyon)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "conformance"))

import rawamps  # noqa: E402  (stdlib-only raw AMPS client shared with the conformance suite)

BIN = Path(os.environ.get("TACHYON_BIN") or (REPO / "target" / "release" / "tachyon"))
STARTUP_TIMEOUT = 15.0
SHUTDOWN_TIMEOUT = 10.0


def pytest_sessionstart(session):
    if not BIN.is_file() or not os.access(BIN, os.X_OK):
        pytest.exit(f"tachyon binary not found or not executable: {BIN} (set TACHYON_BIN)", returncode=2)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Reply:
    def __init__(self, status: int, headers, body: bytes):
        self.status = status
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.body = body.decode("utf-8")

    def json(self):
        assert self.headers.get("content-type") == "application/json", self.headers
        return json.loads(self.body)


class Server:
    def __init__(self, workdir: Path, shards: int):
        self.workdir = workdir
        self.shards = shards
        self.host = "127.0.0.1"
        self.port = free_port()
        self.admin_port = free_port()
        self.config_path = workdir / "tachyon.toml"
        self.stderr_path = workdir / "server.stderr.log"
        self.log_path = workdir / "tachyon.log"
        self.proc: subprocess.Popen | None = None

    @property
    def admin(self) -> str:
        return f"http://{self.host}:{self.admin_port}"

    def start(self) -> None:
        self.config_path.write_text(
            f"data_dir = {json.dumps(str(self.workdir / 'data'))}\n"
            f"[transport]\namps_tcp = \"{self.host}:{self.port}\"\n"
            f"[runtime]\nshards = {self.shards}\n"
            f"[journal]\ntopics = [\"journaled\"]\n"
            f"[admin]\naddress = \"{self.host}:{self.admin_port}\"\n"
            f"[jsonl]\naddress = \"{self.host}:0\"\n"
            f"[logging]\nfile = {json.dumps(str(self.log_path))}\n"
            f"[[sow.topics]]\ntopic = \"positions\"\nkey_fields = [\"/id\"]\n"
        )
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [str(BIN), "solo", "--config", str(self.config_path)],
            stdout=subprocess.DEVNULL, stderr=self._err, stdin=subprocess.DEVNULL, cwd=str(self.workdir),
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"tachyon exited with status {self.proc.returncode} during startup\n"
                    f"config:\n{self.config_path.read_text()}\nstderr:\n{self.log_text()[-6000:]}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    pass
                if self.get("/health/live").status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait(5)
                raise RuntimeError(
                    f"tachyon did not serve AMPS on {self.port} and the admin API on {self.admin_port} "
                    f"within {STARTUP_TIMEOUT}s\nstderr:\n{self.log_text()[-6000:]}"
                )
            time.sleep(0.05)

    def request(self, method: str, path: str, timeout: float = 5, headers: dict | None = None) -> Reply:
        request = urllib.request.Request(self.admin + path, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return Reply(answer.status, answer.headers, answer.read())
        except urllib.error.HTTPError as error:
            return Reply(error.code, error.headers, error.read())

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def log_text(self) -> str:
        try:
            return self.stderr_path.read_bytes().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> int | None:
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(SHUTDOWN_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                return None
        finally:
            self._err.close()


@pytest.fixture(params=[1, 2], ids=["1-shard", "2-shards"])
def server(request, tmp_path):
    """A running tachyon with the admin API on a free loopback port."""
    last = None
    for attempt in range(3):  # retry only for a lost free-port race
        srv = Server(tmp_path / f"srv-{attempt}", request.param)
        srv.workdir.mkdir(parents=True)
        try:
            srv.start()
            break
        except RuntimeError as error:
            last = error
            if "in use" not in str(error).lower():
                raise
    else:
        raise last
    yield srv
    alive = srv.proc.poll() is None
    rc = srv.stop()
    log = srv.log_text()
    problems = []
    if not alive:
        problems.append("server died during the test")
    elif rc != 0:
        problems.append(f"server exit status after SIGTERM was {rc}, expected 0")
    if "panicked at" in log:
        problems.append("server log contains a panic")
    if problems:
        pytest.fail("; ".join(problems) + f"\n--- server stderr tail ---\n{log[-6000:]}", pytrace=False)


@pytest.fixture
def raw(server):
    """Factory: raw() -> rawamps.RawConn to the server's AMPS port (not logged on)."""
    conns = []

    def _make() -> rawamps.RawConn:
        conn = rawamps.RawConn(server.host, server.port)
        conns.append(conn)
        return conn

    yield _make
    for conn in conns:
        conn.close()
