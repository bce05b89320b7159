"""Slow clients (issue 8, item 4): a subscriber that stops reading is spooled to disk, then
disconnected with a logged reason once its spool passes `limits.message_disk_limit`; the other
subscribers get every message in order, the server's memory stays bounded meanwhile, and the
healthy subscriber's latency does not shift beyond noise: its one-way latency (the publisher's
send time travels in the payload) is measured at a steady publish rate first with no stalled
client (baseline), then while the stalled client is being spooled, and the p50/p90 of the second
must stay within LATENCY_P50_BOUND / LATENCY_P90_BOUND of the first.

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
# How far the healthy subscriber's latency may shift while another client is spooled, as
# (factor, slack in ns): the spooling-phase percentile must be <= factor * baseline + slack.
# The figures are mostly the Python client's own (its threads share the GIL with the publisher
# in this process; measured on a busy 2-core VM: ~0.9 ms at p50, ~3.5 ms at p90, with run-to-run
# noise of a few hundred µs), so the bounds are loose: twice the baseline + 1 ms at p50, three
# times + 2 ms at p90. A server that made the healthy client wait behind the stalled one's
# backlog or its disk writes would put it 10s-100s of ms behind (the spool grows by ~16 MB/s
# here), far past either bound; even a steady 2.3 ms shift at p50 fails the first.
LATENCY_P50_BOUND = (2.0, 1_000_000)
LATENCY_P90_BOUND = (3.0, 2_000_000)


def payload(seq: int) -> bytes:
    """`seq` first (seq_of matches it at the start), then the send time (time.monotonic_ns(), the
    clock of time.monotonic(); the subscriber is in this process), then padding."""
    return json.dumps(
        {"seq": seq, "t": time.monotonic_ns(), "pad": "x" * PAD_BYTES}, separators=(",", ":")
    ).encode()


SENT_RE = re.compile(rb'"t":(\d+)')


def sent_ns_of(data) -> int:
    if isinstance(data, str):
        data = data.encode()
    match = SENT_RE.search(data, 0, 80)
    assert match, f"no send time in payload {data[:80]!r}"
    return int(match.group(1))


def percentile(sorted_values: list[int], fraction: float) -> int:
    """Nearest-rank percentile of an ascending list."""
    assert sorted_values
    rank = max(1, -(-len(sorted_values) * fraction // 1))
    return sorted_values[int(rank) - 1]


def describe_latencies(values: list[int]) -> str:
    ordered = sorted(values)
    figures = ", ".join(
        f"{label} {percentile(ordered, fraction) / 1000:.0f}"
        for label, fraction in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)]
    )
    return f"n={len(ordered)}: {figures} µs"


def seq_of(data) -> int:
    if isinstance(data, str):
        data = data.encode()
    match = re.match(rb'\{"seq":(-?\d+)', data)
    assert match, f"unexpected payload {data[:80]!r}"
    return int(match.group(1))


def assert_in_order(who: str, seqs: list[int], expected: int, start: int = 0) -> None:
    """`seqs` is exactly start, start+1, ..., start+expected-1."""
    if seqs == list(range(start, start + expected)):
        return
    for index, seq in enumerate(seqs):
        if seq != start + index:
            raise AssertionError(
                f"{who}: message #{index} has seq {seq}, not {start + index} (gap or reorder); "
                f"got {len(seqs)} of {expected}"
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
        # When the last admin poll that still counted no spool-limit disconnect was sent: the
        # stalled client was surely connected until then.
        self.connected_until: float | None = None
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
            if time.monotonic() - last_admin > 0.1:
                last_admin = time.monotonic()
                try:
                    counters = totals(self.address)
                except OSError:
                    continue
                self.max_backlog = max(self.max_backlog, counters["spool_backlog_bytes"])
                if counters["spool_limit_disconnects"] == 0:
                    self.connected_until = last_admin
                elif self.disconnect_seen_at is None:
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


class HealthySubscriber:
    """A real-client subscriber that records the seq of everything it receives, and when each
    message was sent (from its payload) and received (time.monotonic_ns() on arrival)."""

    def __init__(self, make_client):
        self.seqs: list[int] = []
        self.sent_ns: list[int] = []
        self.received_ns: list[int] = []
        self._done = threading.Condition()
        client = make_client(unique_name("healthy"))
        client.subscribe(self._on_message, TOPIC, timeout=5000)

    def _on_message(self, message) -> None:
        received = time.monotonic_ns()
        data = message.get_data()
        seq, sent = seq_of(data), sent_ns_of(data)
        with self._done:
            self.seqs.append(seq)
            self.sent_ns.append(sent)
            self.received_ns.append(received)
            self._done.notify_all()

    def wait_for(self, count: int, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        with self._done:
            while len(self.seqs) < count:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"healthy subscriber: {len(self.seqs)} of {count} within {timeout}s"
                self._done.wait(remaining)
            return list(self.seqs)

    def latencies_ns(self, keep) -> list[int]:
        """One-way latencies of the messages for which keep(seq, sent_ns) is true."""
        with self._done:
            samples = list(zip(self.seqs, self.sent_ns, self.received_ns))
        return [received - sent for seq, sent, received in samples if keep(seq, sent)]


def healthy_subscriber(make_client):
    """A HealthySubscriber's wait_for (for the tests that only check what arrived)."""
    return HealthySubscriber(make_client).wait_for


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
    healthy = HealthySubscriber(make_client)
    wait_healthy = healthy.wait_for
    publisher = make_client(unique_name("publisher"))
    # Warm-up: buffers reach their working size before the memory baseline is taken.
    warmup = 200
    publish_paced(publisher, 0, warmup, 4000)
    wait_healthy(warmup, 10)
    time.sleep(0.3)
    # Started before the baseline phase so the test's own sampling loads both phases alike.
    watcher = Watcher(server, address)

    rate, baseline_count, count = 4000, 8000, 16000
    stalled_name = unique_name("stalled")
    try:
        # Phase A, the latency baseline: the same steady rate, no stalled client yet (its 256 KiB
        # budget would fill within ~60 messages, so it must not be there).
        took_baseline = publish_paced(publisher, warmup, baseline_count, rate)
        # Not publisher.flush(): after a flush() the Python client's later publishes reach the
        # server ~2.5 ms later (p50) for the rest of the connection (a raw-socket publisher that
        # flushes does not show it), which would shift phase B for a reason of the client's own.
        wait_healthy(warmup + baseline_count, 30)
        # Phase B: a subscriber that stops reading joins; it is spooled, then disconnected.
        stalled = stalled_subscriber(server, stalled_name, 4096)
        first = warmup + baseline_count
        took = publish_paced(publisher, first, count, rate)
        publisher.flush(20000)
        total = first + count
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

    # The healthy subscriber's latency: phase A's messages against those sent while the stalled
    # client was being spooled (spool file seen .. last admin poll before the disconnect).
    spooling_from = watcher.spool_seen_at or float("inf")
    spooling_until = watcher.connected_until or 0.0
    baseline = healthy.latencies_ns(lambda seq, sent: warmup <= seq < first)
    spooling = healthy.latencies_ns(lambda seq, sent: seq >= first and spooling_from <= sent / 1e9 <= spooling_until)
    after = healthy.latencies_ns(lambda seq, sent: seq >= first and sent / 1e9 > spooling_until)
    print(
        f"\nhealthy subscriber's one-way latency at {rate}/s:\n"
        f"  A baseline, no stalled client ({took_baseline:.2f}s): {describe_latencies(baseline)}\n"
        f"  B stalled client being spooled ({max(0.0, spooling_until - spooling_from):.2f}s): "
        f"{describe_latencies(spooling) if spooling else 'no samples'}\n"
        f"  after the disconnect: {describe_latencies(after) if after else 'no samples'}"
    )
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
    # The stalled client's backlog did not hold up the healthy one: its latency while the other
    # was spooled stayed within noise of the baseline (see LATENCY_P50_BOUND).
    assert len(spooling) >= rate // 4, f"only {len(spooling)} messages sent while the stalled client was spooled"
    baseline.sort()
    spooling.sort()
    for label, fraction, (factor, slack_ns) in [("p50", 0.5, LATENCY_P50_BOUND), ("p90", 0.9, LATENCY_P90_BOUND)]:
        before, during = percentile(baseline, fraction), percentile(spooling, fraction)
        bound = factor * before + slack_ns
        assert during <= bound, (
            f"healthy subscriber's {label} latency went from {before / 1000:.0f} µs (no stalled client) to "
            f"{during / 1000:.0f} µs while a stalled client was spooled (bound {bound / 1000:.0f} µs)"
        )
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
    # What the stalled client still gets is a gap-free prefix of phase B (it subscribed just
    # before it), then the end of the connection.
    got, _ = stalled.read_until_closed(10)
    prefix = [seq_of(frame.data) for frame in got if frame.c == "p"]
    assert_in_order("stalled subscriber's prefix", prefix, len(prefix), start=first)
    assert len(prefix) < count


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
