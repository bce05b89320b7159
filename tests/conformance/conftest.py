"""Fixtures for the Tachyon conformance suite.

Each test gets its own server process (`tachyon solo --config FILE`) on a free loopback
port, driven by the real AMPS Python client (module `AMPS`, amps-python-client 5.3.5.14)
and by raw sockets (rawamps.py).

Server contract under test:
  * `tachyon solo --config FILE`, TOML config with data_dir, [transport] amps_tcp, [runtime] shards
  * AMPS over TCP on amps_tcp, logs to stderr
  * SIGTERM -> exit status 0 within 10 s (checked after every test), never a panic in the log

Environment:
  TACHYON_BIN             server binary (default: <repo>/target/release/tachyon)
  TACHYON_TEST_TIMEOUT    hard per-test watchdog in seconds (default 120)
"""

from __future__ import annotations

import faulthandler
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

import rawamps  # noqa: E402

BIN = Path(os.environ.get("TACHYON_BIN") or (REPO / "target" / "release" / "tachyon"))
STARTUP_TIMEOUT = 15.0
SHUTDOWN_TIMEOUT = 10.0
DEFAULT_TEST_TIMEOUT = float(os.environ.get("TACHYON_TEST_TIMEOUT", "120"))

_live_servers: set = set()
ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# --------------------------------------------------------------------------- session checks
def pytest_configure(config):
    config.addinivalue_line("markers", "hard_timeout(seconds): per-test watchdog override")
    config.addinivalue_line("markers", "server_toml(text): extra TOML appended to the server's config")


def pytest_sessionstart(session):
    if not BIN.is_file() or not os.access(BIN, os.X_OK):
        pytest.exit(f"tachyon binary not found or not executable: {BIN} (set TACHYON_BIN)", returncode=2)


# --------------------------------------------------------------------------- hard watchdog
# Every test already uses explicit timeouts; this is the last line of defence against a
# call that blocks inside the C client. On expiry: dump all stacks, kill our servers, exit 3.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    m = item.get_closest_marker("hard_timeout")
    limit = float(m.args[0]) if m else DEFAULT_TEST_TIMEOUT

    def fire():
        capman = item.config.pluginmanager.getplugin("capturemanager")
        if capman is not None:
            try:
                capman.suspend_global_capture(in_=True)
            except Exception:
                pass
        sys.stderr.write(f"\n\n*** WATCHDOG: {item.nodeid} exceeded {limit:.0f}s; dumping stacks and aborting ***\n")
        faulthandler.dump_traceback(all_threads=True)
        for srv in list(_live_servers):
            try:
                srv.proc.kill()
            except Exception:
                pass
            sys.stderr.write(f"--- server log tail ({srv.stderr_path}) ---\n{srv.log_text()[-4000:]}\n")
        sys.stderr.flush()
        os._exit(3)

    t = threading.Timer(limit, fire)
    t.daemon = True
    t.start()
    try:
        yield
    finally:
        t.cancel()


# --------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, workdir: Path, shards: int = 1, extra_toml: str = ""):
        self.workdir = workdir
        self.shards = shards
        # Appended to the generated config (e.g. [[sow.topics]] tables); see the server_toml marker.
        self.extra_toml = extra_toml
        self.host = "127.0.0.1"
        self.port = free_port()
        self.data_dir = workdir / "data"
        self.config_path = workdir / "tachyon.toml"
        self.stderr_path = workdir / "server.stderr.log"
        self.stdout_path = workdir / "server.stdout.log"
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"tcp://{self.host}:{self.port}/amps/json"

    def uri_with_credentials(self, user: str, pw: str) -> str:
        return f"tcp://{user}:{pw}@{self.host}:{self.port}/amps/json"

    def write_config(self) -> None:
        self.config_path.write_text(
            f"data_dir = {json.dumps(str(self.data_dir))}\n"
            f"[transport]\n"
            f"amps_tcp = \"{self.host}:{self.port}\"\n"
            f"[runtime]\n"
            f"shards = {self.shards}\n"
            f"[admin]\n"
            f"address = \"127.0.0.1:0\"\n"
            f"[jsonl]\n"
            f"address = \"127.0.0.1:0\"\n"
            + (f"\n{self.extra_toml}\n" if self.extra_toml else "")
        )

    def start(self) -> None:
        self.write_config()
        self._err = open(self.stderr_path, "wb")
        self._out = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen(
            [str(BIN), "solo", "--config", str(self.config_path)],
            stdout=self._out,
            stderr=self._err,
            stdin=subprocess.DEVNULL,
            cwd=str(self.workdir),
        )
        _live_servers.add(self)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise RuntimeError(
                    f"tachyon exited with status {rc} during startup\n"
                    f"config:\n{self.config_path.read_text()}\nstderr:\n{self.log_text()[-6000:]}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait(5)
                raise RuntimeError(
                    f"tachyon did not accept on {self.host}:{self.port} within {STARTUP_TIMEOUT}s\n"
                    f"stderr:\n{self.log_text()[-6000:]}"
                )
            time.sleep(0.05)

    def log_text(self) -> str:
        try:
            return self.stderr_path.read_bytes().decode("utf-8", "replace")
        except OSError:
            return ""

    def plain_log(self) -> str:
        """The log with ANSI colour sequences removed (for pattern matching)."""
        return ANSI_RE.sub("", self.log_text())

    def wait_for_log(self, pattern: str, timeout: float = 5.0, flags=re.IGNORECASE) -> re.Match:
        rx = re.compile(pattern, flags)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.plain_log())
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"server log has no line matching /{pattern}/ within {timeout}s; log tail:\n"
                    f"{self.log_text()[-3000:]}"
                )
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> tuple[int | None, float]:
        """SIGTERM, wait. Returns (exit status or None if it had to be killed, seconds)."""
        t0 = time.monotonic()
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(SHUTDOWN_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                rc = None
        finally:
            _live_servers.discard(self)
            self._err.close()
            self._out.close()
        return rc, time.monotonic() - t0


def _start_server(tmp_path: Path, shards: int, extra_toml: str = "") -> Server:
    last = None
    for _ in range(3):  # retry only for a lost free-port race
        srv = Server(tmp_path / f"srv-{uuid.uuid4().hex[:6]}", shards, extra_toml)
        srv.workdir.mkdir(parents=True)
        try:
            srv.start()
            return srv
        except RuntimeError as e:
            last = e
            _live_servers.discard(srv)
            if "in use" not in str(e).lower():
                raise
    raise last


@pytest.fixture
def server(request, tmp_path):
    """A running tachyon. Parametrize with `@pytest.mark.parametrize("server", [1, 2], indirect=True)`
    to choose the number of shards (default 1)."""
    shards = getattr(request, "param", 1)
    marker = request.node.get_closest_marker("server_toml")
    srv = _start_server(tmp_path, shards, marker.args[0] if marker else "")
    yield srv
    was_alive = srv.alive()
    early_rc = srv.proc.poll()
    rc, took = srv.stop()
    log = srv.log_text()
    problems = []
    if not was_alive:
        problems.append(f"server died during the test (exit status {early_rc})")
    elif rc is None:
        problems.append(f"server did not exit within {SHUTDOWN_TIMEOUT}s of SIGTERM (killed)")
    elif rc != 0:
        problems.append(f"server exited with status {rc} after SIGTERM (expected 0), took {took:.2f}s")
    if re.search(r"panicked at|RUST_BACKTRACE|stack backtrace", log):
        problems.append("server log contains a panic")
    if problems:
        pytest.fail("; ".join(problems) + f"\n--- server stderr tail ---\n{log[-6000:]}", pytrace=False)


# --------------------------------------------------------------------------- clients
_name_counter = [0]


def unique_name(prefix: str = "conf") -> str:
    _name_counter[0] += 1
    return f"{prefix}-{os.getpid()}-{_name_counter[0]}"


@pytest.fixture
def make_client(server):
    """Factory: make_client(name=None, uri=None, heartbeat=None, logon_timeout_ms=5000) -> connected,
    logged-on AMPS.Client. All are disconnected at teardown (before the server is stopped)."""
    import AMPS

    clients = []

    def _make(name: str | None = None, uri: str | None = None, heartbeat=None,
              logon_timeout_ms: int = 5000):
        c = AMPS.Client(name or unique_name())
        if heartbeat is not None:
            c.set_heartbeat(*heartbeat)
        c.connect(uri or server.uri)
        clients.append(c)
        c.logon(logon_timeout_ms)
        return c

    yield _make
    for c in clients:
        try:
            c.disconnect()
        except Exception:
            pass


@pytest.fixture
def raw(server):
    """Factory: raw(timeout=5.0, strict=True) -> rawamps.RawConn connected (not logged on)."""
    conns = []

    def _make(timeout: float = rawamps.DEFAULT_TIMEOUT, strict: bool = True) -> rawamps.RawConn:
        c = rawamps.RawConn(server.host, server.port, timeout=timeout, strict=strict)
        conns.append(c)
        return c

    yield _make
    for c in conns:
        c.close()
