"""Slow clients (issue 8, item 4): a subscriber that stops reading is spooled to disk, then
disconnected with a logged reason once its spool passes `limits.message_disk_limit`; the other
subscribers get every message in order and the server's memory stays bounded meanwhile.

The stalled subscriber is a raw socket with a tiny SO_RCVBUF that subscribes and then stops
reading; the publisher and the healthy subscriber are the real AMPS Python client. The limits are
small so each test runs in a few seconds; the numbers each test measured are printed (-s shows
them).
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

import rawamps
from conftest import unique_name

TOPIC = "slow.feed"
PAD_BYTES = 4000
# Memory budget per client (the minimum the config allows), spool limit per client, and the
# instance-wide memory limit, for the tests that stall a subscriber.
BUDGET_BYTES = 256 * 1024
DISK_LIMIT_BYTES = 32 * 1024 * 1024
MEMORY_LIMIT_BYTES = 64 * 1024 * 1024
LIMITS = f"""
[limits]
client_outbound_bytes_max = {BUDGET_BYTES}
message_memory_limit = {MEMORY_LIMIT_BYTES}
message_disk_limit = {DISK_LIMIT_BYTES}
"""
# The instance-limit variant: each client may hold 64 MiB, but all together only 1 MiB.
INSTANCE_LIMITS = f"""
[limits]
client_outbound_bytes_max = {64 * 1024 * 1024}
message_memory_limit = {1024 * 1024}
message_disk_limit = {DISK_LIMIT_BYTES}
"""
# The server may grow by this much while a stalled client's spool fills to DISK_LIMIT_BYTES:
# half the spool limit, so a server that kept the backlog in memory fails.
RSS_GROWTH_MAX_BYTES = DISK_LIMIT_BYTES // 2


def payload(seq: int) -> bytes:
    return json.dumps({"seq": seq, "pad": "x" * PAD_BYTES}, separators=(",", ":")).encode()


def seq_of(data) -> int:
    if isinstance(data, str):
        data = data.encode()
    match = re.match(rb'\{"seq":(-?\d+)', data)
    assert match, f"unexpected payload {data[:80]!r}"
    return int(match.group(1))


def assert_in_order(who: str, seqs: list[int], expected: int) -> None:
    if seqs == list(range(expected)):
        return
    for index, seq in enumerate(seqs):
        if seq != index:
            raise AssertionError(
                f"{who}: message #{index} has seq {seq} (gap or reorder); got {len(seqs)} of {expected}"
            )
    raise AssertionError(f"{who}: got {len(seqs)} of {expected} messages (the rest are missing)")


class StalledConn(rawamps.RawConn):
    """A raw AMPS connection whose receive buffer is set small before connecting, so the kernel
    absorbs little once the test stops reading."""

    def __init__(self, host: str, port: int, receive_buffer_bytes: int, timeout: float = 5.0):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer_bytes)
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.buf = bytearray()
        self.strict = True
        self.eof = False
        self.frames = []
        self._cid = 0

    def read_publishes(self, until_seq: int, timeout: float) -> list[int]:
        """Reads until the message with `until_seq` arrived; returns every seq read."""
        seqs: list[int] = []
        deadline = time.monotonic() + timeout
        while not seqs or seqs[-1] != until_seq:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"stalled client: no seq {until_seq} within {timeout}s; have {len(seqs)}"
            frame = self.read_frame(remaining)
            self.frames.clear()  # keep only what the test needs
            if frame.c == "p":
                seqs.append(seq_of(frame.data))
        return seqs


def vm_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/<pid>/status")


def admin_address(server) -> str:
    return server.wait_for_log(r"admin API on http://([0-9.:]+)/health", 5).group(1)


def totals(address: str) -> dict:
    with urllib.request.urlopen(f"http://{address}/amps/instance/totals", timeout=5) as response:
        return json.load(response)


def spool_files(server) -> list[Path]:
    return sorted((server.data_dir / "spool").glob("*.spool"))


class Watcher:
    """Samples the server's VmRSS, its spool folder and its spool counters until stopped."""

    def __init__(self, server, address: str):
        self.server = server
        self.address = address
        self.baseline_rss = vm_rss_bytes(server.proc.pid)
        self.max_rss = self.baseline_rss
        self.max_spool_files = 0
        self.max_backlog = 0
        self.spool_seen_at: float | None = None
        self.disconnect_seen_at: float | None = None
        self.started_at = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last_admin = 0.0
        while not self._stop.is_set():
            try:
                self.max_rss = max(self.max_rss, vm_rss_bytes(self.server.proc.pid))
            except OSError:
                return
            files = spool_files(self.server)
            if files and self.spool_seen_at is None:
                self.spool_seen_at = time.monotonic()
            self.max_spool_files = max(self.max_spool_files, len(files))
            if time.monotonic() - last_admin > 0.2:
                last_admin = time.monotonic()
                try:
                    counters = totals(self.address)
                except OSError:
                    continue
                self.max_backlog = max(self.max_backlog, counters["spool_backlog_bytes"])
                if counters["spool_limit_disconnects"] and self.disconnect_seen_at is None:
                    self.disconnect_seen_at = time.monotonic()
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def rss_growth(self) -> int:
        return self.max_rss - self.baseline_rss


def publish_paced(publisher, first: int, count: int, rate_per_second: float) -> float:
    """Publishes seqs first..first+count-1 at a steady rate; returns the seconds it took."""
    started = time.monotonic()
    for offset in range(count):
        due = started + offset / rate_per_second
        ahead = due - time.monotonic()
        if ahead > 0.002:
            time.sleep(ahead)
        publisher.publish(TOPIC, payload(first + offset))
    return time.monotonic() - started


def healthy_subscriber(make_client):
    """A real-client subscriber that records the seq of everything it receives."""
    seqs: list[int] = []
    done = threading.Condition()

    def on_message(message) -> None:
        data = message.get_data()
        with done:
            seqs.append(seq_of(data))
            done.notify_all()

    client = make_client(unique_name("healthy"))
    client.subscribe(on_message, TOPIC, timeout=5000)

    def wait_for(count: int, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        with done:
            while len(seqs) < count:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"healthy subscriber: {len(seqs)} of {count} within {timeout}s"
                done.wait(remaining)
            return list(seqs)

    return wait_for


def stalled_subscriber(server, name: str, receive_buffer_bytes: int) -> StalledConn:
    conn = StalledConn(server.host, server.port, receive_buffer_bytes)
    conn.logon(name)
    conn.subscribe(TOPIC, "stall")
    return conn


@pytest.mark.hard_timeout(90)
@pytest.mark.server_toml(LIMITS)
def test_a_stalled_subscriber_is_spooled_then_disconnected_and_the_other_gets_everything(
    server, make_client
):
    address = admin_address(server)
    wait_healthy = healthy_subscriber(make_client)
    stalled_name = unique_name("stalled")
    stalled = stalled_subscriber(server, stalled_name, 4096)
    publisher = make_client(unique_name("publisher"))
    # Warm-up: buffers reach their working size before the memory baseline is taken.
    warmup = 200
    publish_paced(publisher, 0, warmup, 4000)
    wait_healthy(warmup, 10)
    time.sleep(0.3)
    watcher = Watcher(server, address)

    rate, count = 4000, 16000
    try:
        took = publish_paced(publisher, warmup, count, rate)
        publisher.flush(20000)
        total = warmup + count
        seqs = wait_healthy(total, 30)
        line = server.wait_for_log(
            r"^.*disconnecting: slow consumer: .*limits\.message_disk_limit.*$", 10, re.IGNORECASE | re.MULTILINE
        ).group(0)
        deadline = time.monotonic() + 2
        while watcher.disconnect_seen_at is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        watcher.stop()
    disconnected_at = watcher.disconnect_seen_at or time.monotonic()

    # The healthy subscriber got every message, in order, with no gap.
    assert_in_order("healthy subscriber", seqs, total)
    # The stalled client was spooled first: the file appeared, and the counters rose.
    counters = totals(address)
    print(
        f"\npublished {count} x {len(payload(0))} B at {rate}/s in {took:.2f}s; "
        f"server VmRSS baseline {watcher.baseline_rss / 2**20:.1f} MiB, max {watcher.max_rss / 2**20:.1f} MiB "
        f"(+{watcher.rss_growth / 2**20:.1f} MiB); spool file seen after "
        f"{(watcher.spool_seen_at or float('nan')) - watcher.started_at:.2f}s, disconnect seen after "
        f"{disconnected_at - watcher.started_at:.2f}s (admin poll); max spool backlog {watcher.max_backlog / 2**20:.1f} MiB; counters {json.dumps({k: v for k, v in counters.items() if 'spool' in k or 'slow' in k})}"
    )
    assert watcher.spool_seen_at is not None, "no spool file appeared under <data_dir>/spool"
    assert watcher.spool_seen_at < disconnected_at
    assert counters["spools_opened"] >= 1
    assert counters["bytes_spooled"] >= DISK_LIMIT_BYTES // 2, counters
    assert counters["messages_spooled"] > 0
    assert counters["spool_limit_disconnects"] == 1, counters
    assert counters["slow_consumers_disconnected"] == 1, counters
    assert counters["spool_backlog_bytes"] == 0, counters
    server.wait_for_log(rf"slow consumer: spooling to disk.*{re.escape(stalled_name)}|{re.escape(stalled_name)}.*slow consumer: spooling to disk", 2)
    # The reason names the client, the bytes queued and spooled, and the limits.
    assert stalled_name in line, line
    for needle in ["bytes spooled", "bytes queued in memory", str(DISK_LIMIT_BYTES), "limits.client_outbound_bytes_max"]:
        assert needle in line, f"{needle!r} missing from {line!r}"
    # Memory stayed bounded although the stalled client fell behind by the whole spool limit.
    assert watcher.rss_growth < RSS_GROWTH_MAX_BYTES, (
        f"server VmRSS grew by {watcher.rss_growth / 2**20:.1f} MiB while a client stalled "
        f"(bound {RSS_GROWTH_MAX_BYTES / 2**20:.0f} MiB)"
    )
    # The spool file went with the connection.
    deadline = time.monotonic() + 5
    while spool_files(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert spool_files(server) == [], "spool file left behind after the disconnect"
    # What the stalled client still gets is a gap-free prefix, then the end of the connection.
    got, _ = stalled.read_until_closed(10)
    prefix = [seq_of(frame.data) for frame in got if frame.c == "p"]
    assert_in_order("stalled subscriber's prefix", prefix, len(prefix))
    assert len(prefix) < total


@pytest.mark.hard_timeout(90)
@pytest.mark.parametrize(
    "server",
    [
        pytest.param(1, marks=pytest.mark.server_toml(LIMITS), id="client-budget"),
        pytest.param(2, marks=pytest.mark.server_toml(INSTANCE_LIMITS), id="instance-limit-2-shards"),
    ],
    indirect=True,
)
def test_a_paused_subscriber_catches_up_from_its_spool_in_order(server, make_client):
    """Memory -> disk -> memory on the real server: the subscriber pauses long enough to be
    spooled, resumes, and receives every message in order; the spool file then goes away. In the
    instance-limit variant the client's own budget (64 MiB) is never reached: the instance's
    1 MiB limit is what sends it to disk."""
    instance_variant = "message_memory_limit = 1048576" in server.extra_toml
    address = admin_address(server)
    wait_healthy = healthy_subscriber(make_client)
    paused_name = unique_name("paused")
    paused = stalled_subscriber(server, paused_name, 16 * 1024)
    publisher = make_client(unique_name("publisher"))
    warmup = 200
    publish_paced(publisher, 0, warmup, 3000)
    wait_healthy(warmup, 10)
    assert paused.read_publishes(warmup - 1, 10) == list(range(warmup))
    time.sleep(0.3)
    watcher = Watcher(server, address)

    rate, paused_count, resumed_count = 3000, 4500, 4500
    total = warmup + paused_count + resumed_count
    reader_result: dict = {}
    try:
        took_paused = publish_paced(publisher, warmup, paused_count, rate)
        publisher.flush(20000)
        time.sleep(0.3)
        spooled_while_paused = totals(address)["spool_backlog_bytes"]
        files_while_paused = spool_files(server)

        def read_rest() -> None:
            try:
                reader_result["seqs"] = paused.read_publishes(total - 1, 60)
                reader_result["done_at"] = time.monotonic()
            except BaseException as error:  # noqa: BLE001
                reader_result["error"] = error

        resumed_at = time.monotonic()
        reader = threading.Thread(target=read_rest, daemon=True)
        reader.start()
        took_resumed = publish_paced(publisher, warmup + paused_count, resumed_count, rate)
        publisher.flush(20000)
        reader.join(60)
        healthy = wait_healthy(total, 30)
    finally:
        watcher.stop()
    assert "error" not in reader_result, reader_result.get("error")
    assert "seqs" in reader_result, "the resumed subscriber did not finish reading"
    counters = totals(address)
    print(
        f"\n[{'instance limit' if instance_variant else 'client budget'}] paused for {paused_count} msgs "
        f"({took_paused:.2f}s at {rate}/s), spool backlog then {spooled_while_paused / 2**20:.1f} MiB; resumed and "
        f"caught up {reader_result['done_at'] - resumed_at:.2f}s after resuming (publishing {took_resumed:.2f}s); "
        f"VmRSS baseline {watcher.baseline_rss / 2**20:.1f} MiB, max {watcher.max_rss / 2**20:.1f} MiB "
        f"(+{watcher.rss_growth / 2**20:.1f} MiB); counters "
        f"{json.dumps({k: v for k, v in counters.items() if 'spool' in k or 'slow' in k})}"
    )
    # Both subscribers got everything, in order, with no gap.
    assert_in_order("healthy subscriber", healthy, total)
    assert_in_order("resumed subscriber", list(range(warmup)) + reader_result["seqs"], total)
    # The pause went to disk, not to memory.
    assert files_while_paused, "no spool file while the subscriber was paused"
    assert spooled_while_paused > 2 * 1024 * 1024, f"only {spooled_while_paused} bytes spooled"
    assert counters["spools_opened"] >= 1
    assert counters["bytes_spooled"] >= spooled_while_paused
    assert watcher.rss_growth < RSS_GROWTH_MAX_BYTES, (
        f"server VmRSS grew by {watcher.rss_growth / 2**20:.1f} MiB (bound {RSS_GROWTH_MAX_BYTES / 2**20:.0f} MiB)"
    )
    # Caught up: the spool drained, its file is gone, and nobody was disconnected.
    server.wait_for_log(rf"spool drained and removed.*client={re.escape(paused_name)}", 5)
    assert spool_files(server) == []
    assert counters["spool_backlog_bytes"] == 0
    assert counters["slow_consumers_disconnected"] == 0
    assert paused.is_open()
    spooling = server.wait_for_log(
        rf"^.*slow consumer: spooling to disk \(([^)]*)\): (\d+) bytes queued.*client={re.escape(paused_name)}.*$",
        2,
        re.IGNORECASE | re.MULTILINE,
    )
    if instance_variant:
        # Far below its own 64 MiB budget: the instance's 1 MiB limit sent it to disk.
        assert "limits.message_memory_limit" in spooling.group(1), spooling.group(0)
        assert int(spooling.group(2)) < 8 * 1024 * 1024, spooling.group(0)
    else:
        assert spooling.group(1) == "its memory budget is full", spooling.group(0)


@pytest.mark.hard_timeout(60)
def test_sigterm_while_a_client_is_spooled_exits_0_and_removes_the_spool(tmp_path):
    """A stalled, spooled client does not hold up shutdown, and leaves no spool file behind."""
    from conftest import _start_server

    server = _start_server(tmp_path, 1, LIMITS)
    publisher = None
    try:
        import AMPS

        stalled = stalled_subscriber(server, unique_name("stalled"), 4096)
        publisher = AMPS.Client(unique_name("publisher"))
        publisher.connect(server.uri)
        publisher.logon(5000)
        seq = 0
        deadline = time.monotonic() + 20
        while not spool_files(server):
            assert time.monotonic() < deadline, "no spool file appeared"
            publish_paced(publisher, seq, 400, 4000)
            seq += 400
        rc, took = server.stop()
        assert rc == 0, f"exit status {rc} (None = killed) with a spooled client; log:\n{server.plain_log()[-3000:]}"
        assert took < 10
        assert spool_files(server) == [], "spool file left behind after shutdown"
        stalled.close()
    finally:
        if server.alive():
            server.proc.kill()
        if publisher is not None:
            try:
                publisher.disconnect()
            except Exception:
                pass
