"""The dashboard in a real browser: headless Chromium loads GET /dashboard from the running binary
while a publisher sends at a steady rate, and the numbers on the page must move.

What it checks, reading the live DOM through the DevTools protocol:
  * the page fills in from the server: version, uptime, health, one row per shard, the topics the
    configuration names, both plots drawn;
  * between two reads 2 s apart the poll count, the published-message count and the uptime grow,
    and the displayed publish rate is in the range of the publisher's rate;
  * the page loads nothing from anywhere but the admin port, throws no exception, logs no error;
  * when the server goes away the page says so and keeps its last values.
Screenshots of the live and the unreachable page are written to tests/dashboard/artifacts/.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest

from conftest import ARTIFACTS, rawamps

PUBLISH_RATE_PER_SECOND = 200
TOPIC = "dashboard.ticks"
# Every fifth message goes to the journaled topic, so the journal panel moves too.
JOURNALED_TOPIC = "journaled"
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
  };
})()"""


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
                topic = JOURNALED_TOPIC if self.sent % 5 == 4 else TOPIC
                payload = json.dumps({"seq": self.sent, "note": "dashboard browser test"}).encode()
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

        # The page fills in, and the publisher's traffic shows up in the rates.
        first = wait_for(
            page,
            lambda r: r["state"] == "live" and r["polls"] >= 4 and r["publishRate"] > 0 and r["ratePoints"] >= 3,
            "a live publish rate after 4 polls", timeout=20)
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
        assert second["connections"] == 2, f"publisher and subscriber should be 2 open connections\n{readings}"
        assert second["health"] == "ready", readings
        assert second["processorRows"] == 3, f"2 shards and a total row\n{readings}"
        assert "journaled" in second["topics"], readings
        # The latency plot is the browser's own round trip, and it is drawn.
        assert second["rttMs"] > 0, readings
        assert second["rttPoints"] >= 4 and second["ratePoints"] >= 4, readings

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
