"""Fixtures for the JSON Lines suite: the real `tachyon solo` binary, driven with real `curl`.

Each test gets its own server process on free loopback ports:
  * AMPS over TCP on [transport] amps_tcp (driven with ../conformance/rawamps.py, stdlib only)
  * the admin API on [admin] address (to read the open-connection gauge)
  * JSON Lines over HTTP on [jsonl] address = "127.0.0.1:0"; the real port is read from the
    server's log line `JSON Lines on http://<addr>`
  * a SOW topic `orders` keyed by /id

Server contract under test (see net/src/jsonl/): POST /publish?topic=T (one status line per
message line), POST /sow (one record per line), GET /subscribe?topic=&filter= (a chunked stream
until the client goes away); errors are HTTP 4xx/5xx with {"error": "..."}; SIGTERM -> exit 0.

Environment:
  TACHYON_BIN   server binary (default: <repo>/target/release/tachyon)
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "conformance"))

import rawamps  # noqa: E402  (stdlib-only raw AMPS client shared with the conformance suite)

BIN = Path(os.environ.get("TACHYON_BIN") or (REPO / "target" / "release" / "tachyon"))
STARTUP_TIMEOUT = 15.0
SHUTDOWN_TIMEOUT = 10.0
CURL_TIMEOUT = 15.0
JSONL_LOG_LINE = re.compile(r"JSON Lines on http://(\S+)")


def pytest_sessionstart(session):
    if not BIN.is_file() or not os.access(BIN, os.X_OK):
        pytest.exit(f"tachyon binary not found or not executable: {BIN} (set TACHYON_BIN)", returncode=2)
    if shutil.which("curl") is None:
        pytest.exit("curl not found (apt-get install curl)", returncode=2)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class CurlReply:
    """What curl reported: its exit code, the HTTP status, headers and body."""

    exit_code: int
    status: int
    headers: dict
    body: bytes
    stderr: str

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")

    def json(self):
        assert self.content_type == "application/json", (self.status, self.headers, self.body)
        return json.loads(self.body)

    def error(self) -> str:
        return self.json()["error"]

    def lines(self) -> list:
        """The body as NDJSON: one JSON value per line, each line ending in a newline."""
        assert self.exit_code == 0, f"curl exit {self.exit_code}: {self.stderr}"
        assert self.status == 200, (self.status, self.body)
        assert self.content_type == "application/x-ndjson", self.headers
        text = self.body.decode("utf-8")
        assert text == "" or text.endswith("\n"), text[-200:]
        return [json.loads(line) for line in text.splitlines()]


def parse_head(raw: bytes) -> tuple[int, dict]:
    """The last response head curl saved (a `100 Continue` may come first)."""
    blocks = [b for b in raw.replace(b"\r\n", b"\n").split(b"\n\n") if b.strip()]
    if not blocks:
        return 0, {}
    lines = blocks[-1].decode("latin-1").split("\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    return status, headers


class Server:
    def __init__(self, workdir: Path, shards: int):
        self.workdir = workdir
        self.shards = shards
        self.host = "127.0.0.1"
        self.port = free_port()
        self.admin_port = free_port()
        self.jsonl = None  # "http://host:port", read from the log
        self.config_path = workdir / "tachyon.toml"
        self.stderr_path = workdir / "server.stderr.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.config_path.write_text(
            f"data_dir = {json.dumps(str(self.workdir / 'data'))}\n"
            f"[transport]\namps_tcp = \"{self.host}:{self.port}\"\n"
            f"[runtime]\nshards = {self.shards}\n"
            f"[admin]\naddress = \"{self.host}:{self.admin_port}\"\n"
            f"[jsonl]\naddress = \"{self.host}:0\"\n"
            f"[[sow.topics]]\ntopic = \"orders\"\nkey_fields = [\"/id\"]\n"
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
            match = JSONL_LOG_LINE.search(self.log_text())
            if match:
                self.jsonl = f"http://{match.group(1)}"
                try:
                    with socket.create_connection((self.host, self.port), timeout=0.5):
                        return
                except OSError:
                    pass
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait(5)
                raise RuntimeError(
                    f"tachyon did not log 'JSON Lines on http://...' and serve AMPS on {self.port} "
                    f"within {STARTUP_TIMEOUT}s\nstderr:\n{self.log_text()[-6000:]}"
                )
            time.sleep(0.05)

    # -------------------------------------------------------------------------------- curl
    def curl(self, path: str, *extra: str, data: bytes | None = None, method: str | None = None,
             timeout: float = CURL_TIMEOUT) -> CurlReply:
        """Runs curl against the JSON Lines port; `data` is sent as the body (POST)."""
        head = self.workdir / "curl.head"
        body = self.workdir / "curl.body"
        command = ["curl", "-sS", "--max-time", str(timeout), "-D", str(head), "-o", str(body)]
        if method:
            command += ["-X", method]
        if data is not None:
            command += ["--data-binary", "@-", "-H", "Content-Type: application/x-ndjson"]
        command += [*extra, self.jsonl + path]
        done = subprocess.run(command, input=data, capture_output=True, timeout=timeout + 5)
        status, headers = parse_head(head.read_bytes() if head.exists() else b"")
        reply = CurlReply(done.returncode, status, headers,
                          body.read_bytes() if body.exists() else b"", done.stderr.decode())
        for leftover in (head, body):
            leftover.unlink(missing_ok=True)
        return reply

    def publish(self, topic: str, text: str) -> list:
        """POST /publish?topic=...; returns the status lines."""
        return self.curl(f"/publish?topic={topic}", data=text.encode()).lines()

    def sow(self, query: dict) -> CurlReply:
        return self.curl("/sow", "-H", "Content-Type: application/json", data=json.dumps(query).encode())

    def stream(self, path: str, *extra: str) -> "CurlStream":
        return CurlStream(self.jsonl + path, *extra)

    # ------------------------------------------------------------------------------- admin
    def connections_open(self) -> int:
        with urllib.request.urlopen(f"http://{self.host}:{self.admin_port}/amps/instance/totals",
                                    timeout=5) as answer:
            return int(json.loads(answer.read())["connections_open"])

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


class CurlStream:
    """`curl -N` reading a chunked stream; lines are read as they arrive."""

    def __init__(self, url: str, *extra: str):
        self.proc = subprocess.Popen(
            ["curl", "-sS", "-N", "--fail-with-body", *extra, url],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.buffer = b""

    def read_line(self, timeout: float = 10.0) -> bytes | None:
        """The next line (without the newline), or None at the end of the stream."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no line within {timeout}s; have {self.buffer[:200]!r}")
            ready, _, _ = select.select([self.proc.stdout], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def read_head(self, timeout: float = 10.0) -> tuple[int, dict]:
        """With curl's -i: the status and headers, read up to the blank line that ends them."""
        status_line = self.read_line(timeout)
        assert status_line is not None, "the stream ended before its status line"
        status = int(status_line.split(b" ")[1])
        headers = {}
        while True:
            line = self.read_line(timeout)
            assert line is not None, "the stream ended inside its headers"
            line = line.rstrip(b"\r")
            if not line:
                return status, headers
            key, _, value = line.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()

    def wait(self, timeout: float = 10.0) -> tuple[int, str]:
        """Waits for curl to exit; returns (exit code, stderr)."""
        code = self.proc.wait(timeout)
        return code, self.proc.stderr.read().decode()

    def close(self) -> None:
        """The client goes away: curl is killed, its connection closes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            pipe.close()


@pytest.fixture(params=[1, 2], ids=["1-shard", "2-shards"])
def server(request, tmp_path):
    """A running tachyon with JSON Lines on a free loopback port."""
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
    streams: list[CurlStream] = []
    srv.streams = streams
    yield srv
    for stream in streams:
        stream.close()
    problems = []
    if not getattr(srv, "stopped_by_test", False):  # a test that stops the server checks it
        if srv.proc.poll() is not None:
            problems.append(f"server died during the test (exit status {srv.proc.returncode})")
        rc = srv.stop()
        if rc != 0 and not problems:
            problems.append(f"server exit status after SIGTERM was {rc}, expected 0")
    log = srv.log_text()
    if "panicked at" in log:
        problems.append("server log contains a panic")
    if problems:
        pytest.fail("; ".join(problems) + f"\n--- server stderr tail ---\n{log[-6000:]}", pytrace=False)


@pytest.fixture
def stream(server):
    """Factory: stream(path, *curl_args) -> CurlStream, killed at the end of the test."""

    def _open(path: str, *extra: str) -> CurlStream:
        opened = server.stream(path, *extra)
        server.streams.append(opened)
        return opened

    return _open


@pytest.fixture
def raw(server):
    """Factory: raw(name) -> rawamps.RawConn to the server's AMPS port, logged on."""
    conns = []

    def _make(name: str = "raw-client") -> rawamps.RawConn:
        conn = rawamps.RawConn(server.host, server.port)
        conns.append(conn)
        conn.logon(name)
        return conn

    yield _make
    for conn in conns:
        conn.close()
