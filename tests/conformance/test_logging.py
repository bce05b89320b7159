"""File logging: lines go to the configured file as well as stderr, the file rotates by size
(keeping the configured number of gzipped files) and on SIGUSR1."""

from __future__ import annotations

import gzip
import signal
import time

import pytest

import rawamps

LOG_TOML = """
[logging]
file = "logs/tachyon.log"
max_bytes = 4096
keep = 3
compress = true
"""


def rotated(server):
    return sorted(p for p in (server.workdir / "logs").iterdir() if p.name != "tachyon.log")


@pytest.mark.server_toml(LOG_TOML)
def test_logs_rotate_by_size_and_on_sigusr1(server):
    log = server.workdir / "logs" / "tachyon.log"
    server.wait_for_log(r"listening")
    assert "listening" in log.read_text()
    for i in range(60):  # each logon and disconnect logs a line naming the client
        with rawamps.RawConn(server.host, server.port) as conn:
            conn.logon(f"log-client-{i:03}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        files = rotated(server)
        if len(files) == 3 and all(p.suffix == ".gz" for p in files):
            break
        time.sleep(0.1)
    files = rotated(server)
    assert len(files) == 3 and all(p.suffix == ".gz" for p in files), files
    assert log.stat().st_size <= 4096
    text = "".join(gzip.open(p, "rt").read() for p in files) + log.read_text()
    assert "log-client-059" in text
    assert "\x1b[" not in text, "no colour codes in the file"

    before = set(rotated(server))
    server.proc.send_signal(signal.SIGUSR1)
    server.wait_for_log(r"log file rotated \(SIGUSR1\)")
    deadline = time.monotonic() + 10
    while set(rotated(server)) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(rotated(server)) != before
    assert server.alive()
