"""Crash safety: a guaranteed publisher keeps publishing while the server is killed with SIGKILL
and restarted several times. Afterwards every message is in the transaction log exactly once,
replay delivers them in publish order, and `tachyon journal verify` finds the log clean.

The publisher is the real HAClient with its memory publish store: it re-sends whatever it had
not seen persisted, and the server must discard what it already had (the logon ack's bookmark
and the publisher table rebuilt by recovery)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time

import AMPS
import pytest

from conftest import BIN, unique_name
from support import Collector, run_with_deadline
from test_journal import JOURNAL_TOML, first_server, ha_client, restart

KILLS = 4


@pytest.mark.hard_timeout(240)
def test_kill_9_under_load_loses_and_duplicates_nothing(tmp_path):
    workdir = tmp_path / "crash"
    workdir.mkdir()
    server = first_server(workdir, JOURNAL_TOML)
    port = server.port
    publisher = ha_client(unique_name("crash-pub"), server.uri)
    stop = threading.Event()
    published = [0]
    errors: list[BaseException] = []

    def publish():
        try:
            while not stop.is_set():
                publisher.publish("orders", json.dumps({"i": published[0], "pad": "x" * 100}))
                published[0] += 1
                if published[0] % 50 == 0:
                    time.sleep(0.002)
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    rng = random.Random(20261122)
    try:
        for kill in range(KILLS):
            since_restart = published[0]
            time.sleep(rng.uniform(0.3, 1.0))
            assert published[0] > since_restart or errors, (
                f"the publisher made no progress in the {kill}th interval")
            server.proc.send_signal(signal.SIGKILL)
            server.proc.wait(10)
            server.stop()  # closes the log files; the process is already gone
            server = restart(workdir, port)
        time.sleep(0.5)
        stop.set()
        thread.join(30)
        assert not errors, errors
        run_with_deadline(lambda: publisher.publish_flush(60000), 70, "publish_flush after the kills")
        total = published[0]
        assert total > 1000, f"only {total} messages were published"
        print(f"{total} messages published across {KILLS} kill -9 restarts")

        reader = AMPS.Client(unique_name("crash-reader"))
        reader.connect(server.uri)
        reader.logon(5000)
        got = Collector("replay")
        reader.bookmark_subscribe(got, "orders", "0", timeout=10000)
        got.wait_count(total, 60)
        time.sleep(0.5)
        numbers = [json.loads(g.data)["i"] for g in got.publishes()]
        assert len(numbers) == total, f"{len(numbers)} replayed for {total} published"
        assert numbers == list(range(total)), "every message exactly once, in publish order"
        reader.disconnect()
    finally:
        stop.set()
        publisher.disconnect()
        rc, _ = server.stop()
    assert rc == 0
    verify = subprocess.run([str(BIN), "journal", "verify", str(server.data_dir)],
                            capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr


SOW_JOURNAL_TOML = JOURNAL_TOML.replace('topics = ["orders"', 'topics = ["sow.book", "orders"') + """
[sow]
snapshot_interval_seconds = 3600
[[sow.topics]]
topic = "sow.book"
key_fields = ["/id"]
durability = "persistent"
"""


@pytest.mark.hard_timeout(120)
def test_a_journaled_sow_topic_is_rebuilt_after_kill_9(tmp_path):
    workdir = tmp_path / "sow-crash"
    workdir.mkdir()
    server = first_server(workdir, SOW_JOURNAL_TOML)
    port = server.port
    writer = ha_client(unique_name("sow-writer"), server.uri)
    try:
        for i in range(200):
            writer.publish("sow.book", json.dumps({"id": i, "v": i}))
        writer.delta_publish("sow.book", json.dumps({"id": 7, "extra": True}))
        writer.sow_delete("sow.book", "/id >= 150", 5000)
        run_with_deadline(lambda: writer.publish_flush(10000), 15, "publish_flush")
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
        server.stop()
        server = restart(workdir, port, SOW_JOURNAL_TOML)
        server.wait_for_log(r"SOW topic rebuilt from the transaction log", timeout=10)
        reader = AMPS.Client(unique_name("sow-reader"))
        reader.connect(server.uri)
        reader.logon(5000)
        records = [json.loads(m.get_data()) for m in reader.sow("sow.book", timeout=10000)
                   if m.get_command() == "sow"]
        records.sort(key=lambda r: r["id"])
        assert [r["id"] for r in records] == list(range(150))
        assert records[7] == {"id": 7, "v": 7, "extra": True}
        reader.disconnect()
    finally:
        writer.disconnect()
        rc, _ = server.stop()
    assert rc == 0
