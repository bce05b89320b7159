"""The dashboard in a real browser: headless Chromium loads GET /dashboard from the running binary
while a publisher sends at a steady rate, and the numbers on the page must move.

What it checks, reading the live DOM through the DevTools protocol:
  * the page fills in from the server: version, uptime, health, one row per shard, all plots drawn;
  * between two reads 2 s apart the poll count, the published-message count and the uptime grow,
    and the displayed publish rate is in the range of the publisher's rate;
  * the clients table has one row per connection, the publisher and the subscriber by their logon
    names with their own counts moving, and a client name made of markup shows as that text;
  * the topics table lists the published topics, the main topic's message count rising, and the
    SOW topic's record count;
  * the server latency plot has per-interval points whose p50 and p99 are bucket bounds (powers of
    two, p50 <= p99), and the journal panel shows records being written;
  * the page loads nothing from anywhere but the admin port, throws no exception, logs no error;
  * when the server goes away the page says so and keeps its last values.
Screenshots of the live and the unreachable page are written to tests/dashboard/artifacts/.
"""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.request

import pytest

from conftest import ARTIFACTS, rawamps

PUBLISH_RATE_PER_SECOND = 200
TOPIC = "dashboard.ticks"
# One message in ten goes to the journaled topic, so the journal panel moves too, and one in ten to
# the SOW topic the server's configuration declares (keyed by /id, SOW_KEYS distinct keys).
JOURNALED_TOPIC = "journaled"
SOW_TOPIC = "positions"
SOW_KEYS = 5
# A client whose logon name is markup: the page must show it as text, not build elements from it.
MARKUP_NAME = '<b id="injected">bold</b><img src=x onerror="window.injected=1">&amp;'
# Finite latency bucket bounds of the server's histogram: 1, 2, 4 ... 2^21 microseconds.
BUCKET_BOUNDS_US = {1 << index for index in range(22)}
VIEWPORT = (1280, 1000)

# Everything the test reads from the page, in one evaluation.
READ_PAGE = """(() => {
  const element = (id) => document.getElementById(id);
  const number = (id) => Number(element(id).dataset.value);
  return {
    state: document.body.dataset.state,
    polls: number("poll-count"),
    version: element("version").textContent,
    uptimeSeconds: number("uptime"),
    uptimeText: element("uptime").textContent,
    health: element("health").textContent,
    connections: number("connections-total"),
    published: number("published-total"),
    publishedText: element("published-total").textContent,
    publishRate: number("publish-rate"),
    publishRateText: element("publish-rate").textContent,
    framesInRate: number("frames-in-rate"),
    framesOutRate: number("frames-out-rate"),
    bytesInRate: number("bytes-in-rate"),
    rttMs: number("rtt-last"),
    ratePoints: Number(element("rates-chart").dataset.points),
    rttPoints: Number(element("rtt-chart").dataset.points),
    processorRows: element("processors").tBodies[0].rows.length,
    topics: element("topics").textContent,
    banner: element("banner").textContent,
    clients: [...element("clients").tBodies[0].rows].filter((row) => row.dataset.id).map((row) => ({
      id: row.dataset.id,
      name: row.dataset.name,
      messagesIn: Number(row.dataset.messagesIn),
      messagesOut: Number(row.dataset.messagesOut),
      cells: [...row.cells].map((cell) => cell.textContent),
    })),
    topicRows: [...element("topics").tBodies[0].rows].filter((row) => row.dataset.topic).map((row) => ({
      topic: row.dataset.topic,
      messagesIn: Number(row.dataset.messagesIn),
      cells: [...row.cells].map((cell) => cell.textContent),
    })),
    injected: document.getElementById("injected") !== null || window.injected !== undefined ||
              element("clients").querySelector("b, img") !== null,
    latencyPoints: Number(element("latency-chart").dataset.points),
    latencyP50Points: Number(element("latency-chart").dataset.p50Points),
    latencyP50s: (element("latency-chart").dataset.p50 || "").split(" ").filter(Boolean).map(Number),
    latencyP99s: (element("latency-chart").dataset.p99 || "").split(" ").filter(Boolean).map(Number),
    latencyP50: element("latency-p50").dataset.value,
    latencyP50Text: element("latency-p50").textContent,
    latencySummary: element("latency-summary").textContent,
    journalRecordsRate: Number(element("journal").querySelector('[data-key="records-rate"]')?.dataset.value || "0"),
  };
})()"""

# Columns of the clients and topics tables, as the page's <thead> lists them.
CLIENT_COLUMNS = ["client", "id", "shard", "peer", "messages in", "in / s", "messages out", "out / s",
                  "bytes in", "bytes out", "queued", "spooled", "subscriptions"]
TOPIC_COLUMNS = ["topic", "messages in", "in / s", "bytes in", "deliveries", "subscriptions", "SOW records"]


class Traffic:
    """A publisher at a steady rate (scheduled, not back-to-back) and a subscriber that drains."""

    def __init__(self, host: str, port: int, rate: int):
        self.rate = rate
        self.stop = threading.Event()
        self.sent = 0
        self.received = 0
        self.errors: list[str] = []
        self.subscriber = rawamps.RawConn(host, port)
        self.subscriber.logon("dashboard-subscriber")
        self.subscriber.subscribe(TOPIC, "dashboard-sub")
        self.publisher = rawamps.RawConn(host, port)
        self.publisher.logon("dashboard-publisher")
        # Logged on and idle: only its name matters.
        self.odd = rawamps.RawConn(host, port)
        self.odd.logon(MARKUP_NAME)
        self.threads = [threading.Thread(target=self._publish, name="publisher", daemon=True),
                        threading.Thread(target=self._drain, name="subscriber", daemon=True)]
        for thread in self.threads:
            thread.start()

    def _publish(self) -> None:
        started = time.monotonic()
        try:
            while not self.stop.is_set():
                due = started + self.sent / self.rate
                delay = due - time.monotonic()
                if delay > 0:
                    self.stop.wait(delay)
                    continue
                topic = {4: JOURNALED_TOPIC, 9: SOW_TOPIC}.get(self.sent % 10, TOPIC)
                payload = json.dumps({"id": self.sent // 10 % SOW_KEYS, "seq": self.sent,
                                      "note": "dashboard browser test"}).encode()
                self.publisher.publish(topic, payload)
                self.sent += 1
        except Exception as error:  # reported by the test, not lost in a thread
            self.errors.append(f"publisher: {error!r}")

    def _drain(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    self.subscriber.read_frame(timeout=0.2)
                    self.received += 1
                except rawamps.FrameTimeout:
                    pass
        except rawamps.Closed:
            if not self.stop.is_set():
                self.errors.append("subscriber: the server closed the connection")
        except Exception as error:
            self.errors.append(f"subscriber: {error!r}")

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(3)
        self.publisher.close()
        self.subscriber.close()
        self.odd.close()


def wait_for(page, predicate, what: str, timeout: float) -> dict:
    """Reads the page every 100 ms until predicate(reading) holds; fails with the last reading."""
    deadline = time.monotonic() + timeout
    while True:
        reading = page.evaluate(READ_PAGE)
        if predicate(reading):
            return reading
        if time.monotonic() > deadline:
            pytest.fail(f"the dashboard did not show {what} within {timeout} s; last reading:\n"
                        f"{json.dumps(reading, indent=2)}", pytrace=False)
        time.sleep(0.1)


def client_named(reading: dict, name: str) -> dict | None:
    """The clients-table row of the client logged on as `name`, if there is exactly one."""
    rows = [row for row in reading["clients"] if row["name"] == name]
    return rows[0] if len(rows) == 1 else None


def topic_row(reading: dict, topic: str) -> dict | None:
    rows = [row for row in reading["topicRows"] if row["topic"] == topic]
    return rows[0] if len(rows) == 1 else None


def number(text: str) -> float:
    """A number as the page formats it ("1,234", "12.5", "—" for none)."""
    return float(text.replace(",", "")) if text not in ("", "—") else float("nan")


def save_screenshot(page, name: str) -> bytes:
    png = page.screenshot_png()
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / name).write_bytes(png)
    return png


def test_dashboard_shows_live_numbers_in_chromium(chromium, server, browser):
    # `chromium` first: without a browser the test skips before it starts a server.
    origin = server.admin
    instance = json.loads(urllib.request.urlopen(origin + "/amps/instance", timeout=5).read())
    traffic = Traffic(server.host, server.port, PUBLISH_RATE_PER_SECOND)
    page = browser.new_page(*VIEWPORT)
    try:
        page.navigate(origin + "/dashboard")

        # The page fills in, and the publisher's traffic shows up in the rates, the tables and the
        # latency plot.
        first = wait_for(
            page,
            lambda r: (r["state"] == "live" and r["polls"] >= 4 and r["publishRate"] > 0 and r["ratePoints"] >= 3
                       and r["latencyP50Points"] >= 3 and client_named(r, "dashboard-publisher") is not None
                       and topic_row(r, TOPIC) is not None and topic_row(r, SOW_TOPIC) is not None),
            "a live publish rate, the publisher, its topics and server latency after 4 polls", timeout=20)
        window_started = time.monotonic()
        time.sleep(2.0)
        second = page.evaluate(READ_PAGE)
        window_seconds = time.monotonic() - window_started

        assert not traffic.errors, traffic.errors
        readings = f"first reading:\n{json.dumps(first, indent=2)}\nsecond reading:\n{json.dumps(second, indent=2)}"
        # Live numbers change between two reads of the DOM.
        assert second["state"] == "live", readings
        assert second["polls"] >= first["polls"] + 2, f"the page stopped polling\n{readings}"
        assert second["published"] > first["published"], f"the published count did not grow\n{readings}"
        assert second["publishedText"] != first["publishedText"], readings
        assert second["uptimeSeconds"] > first["uptimeSeconds"], f"the uptime did not advance\n{readings}"
        # The displayed numbers are the publisher's, not decoration: the count grew by about what was
        # sent in the window, and the rate is in the range of the rate sent (the last 500 ms only).
        grown = second["published"] - first["published"]
        expected = PUBLISH_RATE_PER_SECOND * window_seconds
        assert 0.25 * expected <= grown <= 2.0 * expected + PUBLISH_RATE_PER_SECOND, \
            f"published count grew by {grown} in {window_seconds:.2f} s at {PUBLISH_RATE_PER_SECOND}/s\n{readings}"
        for reading in (first, second):
            assert 0.25 * PUBLISH_RATE_PER_SECOND <= reading["publishRate"] <= 4 * PUBLISH_RATE_PER_SECOND, readings
            assert reading["framesInRate"] >= reading["publishRate"] * 0.9, readings
            assert reading["framesOutRate"] > 0, f"the subscriber's deliveries do not show\n{readings}"
            assert reading["bytesInRate"] > 0, readings
        # What the page shows about the instance matches the instance.
        assert second["version"] == instance["version"], readings
        assert second["connections"] == 3, f"publisher, subscriber and idle client: 3 open connections\n{readings}"
        assert second["health"] == "ready", readings
        assert second["processorRows"] == 3, f"2 shards and a total row\n{readings}"
        assert "journaled" in second["topics"], readings
        # The browser's own round trip is plotted too.
        assert second["rttMs"] > 0, readings
        assert second["rttPoints"] >= 4 and second["ratePoints"] >= 4, readings

        # Clients: one row per connection, each by its logon name, with its own counters.
        assert len(second["clients"]) == 3, f"3 client rows expected\n{readings}"
        publisher_before = client_named(first, "dashboard-publisher")
        publisher = client_named(second, "dashboard-publisher")
        subscriber = client_named(second, "dashboard-subscriber")
        assert publisher is not None and subscriber is not None, readings
        column = {name: index for index, name in enumerate(CLIENT_COLUMNS)}
        assert publisher["cells"][column["client"]] == "dashboard-publisher", readings
        assert publisher["cells"][column["id"]] == publisher["id"], readings
        assert publisher["cells"][column["peer"]].startswith("127.0.0.1:"), readings
        assert publisher["messagesIn"] > publisher_before["messagesIn"], f"the publisher's count did not rise\n{readings}"
        assert 0.25 * PUBLISH_RATE_PER_SECOND <= number(publisher["cells"][column["in / s"]]) \
            <= 4 * PUBLISH_RATE_PER_SECOND, readings
        assert publisher["cells"][column["subscriptions"]] == "0", readings
        assert subscriber["messagesOut"] > client_named(first, "dashboard-subscriber")["messagesOut"], readings
        assert subscriber["cells"][column["subscriptions"]] == "1", readings
        # A name made of markup is shown as the text it is; no element was built from it.
        assert client_named(second, MARKUP_NAME) is not None, readings
        assert client_named(second, MARKUP_NAME)["cells"][column["client"]] == MARKUP_NAME, readings
        assert not second["injected"], f"a client name was parsed as markup\n{readings}"

        # Topics: the published ones, the main topic's count rising at about 8/10 of the rate.
        column = {name: index for index, name in enumerate(TOPIC_COLUMNS)}
        ticks_before, ticks = topic_row(first, TOPIC), topic_row(second, TOPIC)
        assert ticks["messagesIn"] > ticks_before["messagesIn"], f"{TOPIC}'s count did not rise\n{readings}"
        assert number(ticks["cells"][column["in / s"]]) > 0.25 * 0.8 * PUBLISH_RATE_PER_SECOND, readings
        assert ticks["cells"][column["subscriptions"]] == "1", readings
        assert number(ticks["cells"][column["deliveries"]]) > 0, f"the subscriber's deliveries do not show\n{readings}"
        assert ticks["cells"][column["SOW records"]] == "—", readings
        assert topic_row(second, JOURNALED_TOPIC) is not None, readings
        assert topic_row(second, SOW_TOPIC)["cells"][column["SOW records"]] == str(SOW_KEYS), readings

        # Server latency: one point per interval between polls, each p50 and p99 a bucket bound.
        assert second["latencyPoints"] >= first["latencyPoints"] + 2, f"the latency plot stopped\n{readings}"
        assert second["latencyP50Points"] >= 4, readings
        assert len(second["latencyP50s"]) == len(second["latencyP99s"]) == second["latencyP50Points"], readings
        for p50, p99 in zip(second["latencyP50s"], second["latencyP99s"]):
            assert math.isfinite(p50) and p50 in BUCKET_BOUNDS_US, f"p50 {p50} is not a bucket bound\n{readings}"
            assert p50 <= p99 and (p99 in BUCKET_BOUNDS_US or p99 == 2 * max(BUCKET_BOUNDS_US)), readings
        assert second["latencyP50"] == "" or float(second["latencyP50"]) in BUCKET_BOUNDS_US, readings
        assert "Since start" in second["latencySummary"], readings
        # Every plotted quantile is a bucket the server's cumulative histogram has counts in.
        route = json.loads(urllib.request.urlopen(origin + "/amps/instance/latency/route", timeout=5).read())
        assert route["count"] > 0, route
        bounds = route["bucket_bounds_us"] + [2 * route["bucket_bounds_us"][-1]]
        used = [bound for bound, count in zip(bounds, route["bucket_counts"]) if count > 0]
        assert min(used) <= min(second["latencyP50s"]) and max(second["latencyP99s"]) <= max(used), \
            f"the plot shows buckets the server never counted in: {used}\n{readings}"

        # Journal: one message in ten is journaled.
        assert second["journalRecordsRate"] > 0, f"the journal panel shows no records written\n{readings}"

        png = save_screenshot(page, "dashboard.png")
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000, f"screenshot is {len(png)} bytes"

        # Self-contained: every request went to the admin port (or is inline data), nothing failed.
        urls = [event["params"]["request"]["url"] for event in browser.events_named("Network.requestWillBeSent")]
        foreign = [url for url in urls if not (url.startswith(origin + "/") or url.startswith("data:"))]
        assert not foreign, f"the dashboard loaded from elsewhere: {foreign}"
        assert origin + "/amps/instance" in urls and origin + "/health" in urls, sorted(set(urls))
        exceptions = browser.events_named("Runtime.exceptionThrown")
        assert not exceptions, f"the page threw: {json.dumps(exceptions, indent=2)[:3000]}"
        console_errors = [event["params"] for event in browser.events_named("Runtime.consoleAPICalled")
                          if event["params"].get("type") in ("error", "assert")]
        log_errors = [event["params"]["entry"] for event in browser.events_named("Log.entryAdded")
                      if event["params"]["entry"].get("level") == "error"]
        assert not console_errors and not log_errors, \
            f"the browser logged errors (a CSP violation shows up here):\n{console_errors}\n{log_errors}"

        # The server goes away: the page says so and keeps its last values.
        traffic.close()
        rc = server.stop()
        assert rc == 0, f"server exit status after SIGTERM was {rc}, expected 0\n{server.log_text()[-3000:]}"
        down = wait_for(page, lambda r: r["state"] == "error", "that the admin API is unreachable", timeout=8)
        assert "does not answer" in down["banner"], down
        assert down["health"] == "unreachable", down
        assert down["published"] >= second["published"], "the page dropped its last values"
        save_screenshot(page, "dashboard-unreachable.png")
    except BaseException:
        try:
            save_screenshot(page, "dashboard-failure.png")
        except Exception:
            pass
        raise
    finally:
        traffic.close()
