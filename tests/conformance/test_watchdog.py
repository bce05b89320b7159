"""The stuck-shard watchdog and minidumps: a shard blocked by the testing-only debug command is
logged as stuck every second, gets one minidump, and is reported again when it recovers;
SIGQUIT and the admin action write minidumps on demand, and the server keeps serving."""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.request

import pytest

import rawamps

WATCHDOG_TOML = """
[watchdog]
stuck_after_ms = 500
minidump_after_seconds = 2
minidump_dir = "dumps"
debug_block_command = true
"""


def dumps(server):
    folder = server.workdir / "dumps"
    return sorted(folder.glob("*.minidump.txt")) if folder.is_dir() else []


@pytest.mark.hard_timeout(90)
@pytest.mark.server_toml(WATCHDOG_TOML)
def test_a_blocked_shard_is_logged_dumped_and_recovers(server):
    conn = rawamps.RawConn(server.host, server.port)
    conn.logon("blocker")
    conn.publish("tachyon.debug.block-shard", b'{"ms":3500}')
    server.wait_for_log(r"shard stuck: no progress", timeout=5)
    server.wait_for_log(r"minidump written", timeout=10)
    server.wait_for_log(r"shard making progress again", timeout=10)
    stuck_lines = re.findall(r"shard stuck: no progress", server.plain_log())
    assert len(stuck_lines) >= 2, "a stuck shard is logged again while it stays stuck"
    files = dumps(server)
    assert len(files) == 1, f"one minidump per episode: {files}"
    text = files[0].read_text()
    assert "reason: stuck shard" in text
    assert "tachyon-shard-0" in text, "the thread list names the shard threads"
    assert "## user-space backtraces" in text
    # The shard serves again.
    other = rawamps.RawConn(server.host, server.port)
    ack = other.logon("after-block")
    assert ack.get("status") == "success"
    conn.close()
    other.close()


@pytest.mark.hard_timeout(90)
@pytest.mark.server_toml(WATCHDOG_TOML)
def test_sigquit_and_the_admin_action_write_minidumps(server):
    server.proc.send_signal(signal.SIGQUIT)
    server.wait_for_log(r"minidump written.*SIGQUIT|reason=\"?SIGQUIT", timeout=30)
    assert server.alive()
    assert len(dumps(server)) == 1
    admin = server.wait_for_log(r"admin API on http://([0-9.:]+)/health").group(1)
    request = urllib.request.Request(f"http://{admin}/amps/administrator/minidump", method="POST")
    with urllib.request.urlopen(request, timeout=40) as response:
        body = json.loads(response.read())
    assert response.status == 200 and body["status"] == "written", body
    assert len(dumps(server)) == 2
    assert "reason: admin request" in open(body["path"]).read()
    with rawamps.RawConn(server.host, server.port) as conn:
        assert conn.logon("still-serving").get("status") == "success"
