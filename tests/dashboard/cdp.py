"""Headless Chromium driven over the DevTools protocol on a pipe (standard library only).

Chromium started with `--remote-debugging-pipe` reads protocol commands from file descriptor 3 and
writes answers and events to descriptor 4, each message a JSON text ended by a NUL byte. That is
what Playwright and Puppeteer use by default: no debugging port to race for, no WebSocket client
to install, and the browser cannot outlive a broken pipe unnoticed.

    browser = Browser.launch(executable, workdir)
    page = browser.new_page(width=1280, height=1000)
    page.navigate("http://127.0.0.1:1610/dashboard")
    page.evaluate("document.title")
    page.screenshot_png()
    browser.close()

The browser runs in a process group of its own (its pid is the group id), so close() can stop
every process it started, and only those.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

# Executables tried in order when CHROMIUM_BIN is not set. Debian's `chromium` package installs
# the browser under /usr/lib/chromium/ and a shell wrapper as /usr/bin/chromium; the browser
# itself is started directly so its pid is the one we kill.
CANDIDATES = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser", "google-chrome", "headless_shell")

# Maps two inherited pipe ends onto descriptors 3 and 4, closes every other copy, then becomes the
# browser. A Python helper rather than `sh -c 'exec ... 3<&N'` because POSIX sh only promises
# single-digit descriptors in redirections.
_LAUNCHER = (
    "import fcntl, os, sys\n"
    "read_end, write_end = int(sys.argv[1]), int(sys.argv[2])\n"
    "high_read = fcntl.fcntl(read_end, fcntl.F_DUPFD, 10)\n"
    "high_write = fcntl.fcntl(write_end, fcntl.F_DUPFD, 10)\n"
    "os.close(read_end); os.close(write_end)\n"
    "os.dup2(high_read, 3); os.dup2(high_write, 4)\n"
    "os.close(high_read); os.close(high_write)\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)

FLAGS = (
    "--headless=new",
    "--no-sandbox",  # containers and CI runners as root have no user namespaces for the sandbox
    "--disable-gpu",
    "--remote-debugging-pipe",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--disable-component-update",
    "--disable-background-networking",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--hide-scrollbars",
    "--mute-audio",
    "--force-device-scale-factor=1",
    "--password-store=basic",
)


class BrowserError(AssertionError):
    """The browser died, answered a command with an error, or did not answer in time."""


def find_chromium() -> str | None:
    """The Chromium executable: $CHROMIUM_BIN, else the first of CANDIDATES that exists."""
    configured = os.environ.get("CHROMIUM_BIN")
    if configured:
        return configured if os.access(configured, os.X_OK) else shutil.which(configured)
    for candidate in CANDIDATES:
        found = candidate if os.path.isabs(candidate) and os.access(candidate, os.X_OK) else shutil.which(candidate)
        if found:
            return found
    return None


class Browser:
    """One headless Chromium process and its protocol pipe."""

    def __init__(self, proc: subprocess.Popen, to_browser: int, from_browser: int, log_path: Path):
        self.proc = proc
        self.log_path = log_path
        self._to_browser = to_browser
        self._from_browser = from_browser
        self._next_id = 0
        self._answers: dict[int, dict] = {}
        self.events: list[dict] = []
        self._closed = False
        self._changed = threading.Condition()
        self._write_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read_loop, name="cdp-reader", daemon=True)
        self._reader.start()

    @classmethod
    def launch(cls, executable: str, workdir: Path, extra_flags: tuple[str, ...] = ()) -> "Browser":
        workdir.mkdir(parents=True, exist_ok=True)
        profile = workdir / "profile"
        log_path = workdir / "chromium.log"
        to_browser_read, to_browser_write = os.pipe()
        from_browser_read, from_browser_write = os.pipe()
        log = open(log_path, "wb")
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", _LAUNCHER, str(to_browser_read), str(from_browser_write),
                 executable, *FLAGS, f"--user-data-dir={profile}", *extra_flags, "about:blank"],
                pass_fds=(to_browser_read, from_browser_write),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True,  # its own process group: close() kills exactly this tree
                cwd=str(workdir),
            )
        finally:
            log.close()
            os.close(to_browser_read)
            os.close(from_browser_write)
        browser = cls(proc, to_browser_write, from_browser_read, log_path)
        try:
            browser.call("Browser.getVersion", timeout=20)
        except BaseException:
            browser.close()
            raise
        return browser

    # ------------------------------------------------------------------------- protocol
    def _read_loop(self) -> None:
        pending = bytearray()
        while True:
            try:
                chunk = os.read(self._from_browser, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._changed:
                    self._closed = True
                    self._changed.notify_all()
                return
            pending += chunk
            while True:
                end = pending.find(b"\0")
                if end < 0:
                    break
                message = json.loads(pending[:end].decode("utf-8"))
                del pending[: end + 1]
                with self._changed:
                    if "id" in message:
                        self._answers[message["id"]] = message
                    else:
                        self.events.append(message)
                    self._changed.notify_all()

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 10.0) -> dict:
        """Sends one command and returns its result; raises BrowserError on an error or timeout."""
        with self._write_lock:
            self._next_id += 1
            ident = self._next_id
            message = {"id": ident, "method": method, "params": params or {}}
            if session:
                message["sessionId"] = session
            data = json.dumps(message).encode("utf-8") + b"\0"
            try:
                while data:
                    data = data[os.write(self._to_browser, data):]
            except OSError as error:
                raise BrowserError(f"{method}: cannot write to the browser ({error}){self._log_tail()}") from None
        deadline = time.monotonic() + timeout
        with self._changed:
            while ident not in self._answers:
                remaining = deadline - time.monotonic()
                if self._closed:
                    raise BrowserError(f"{method}: the browser closed its pipe (exit status "
                                       f"{self.proc.poll()}){self._log_tail()}")
                if remaining <= 0:
                    raise BrowserError(f"{method}: no answer within {timeout} s{self._log_tail()}")
                self._changed.wait(remaining)
            answer = self._answers.pop(ident)
        if "error" in answer:
            raise BrowserError(f"{method} failed: {answer['error']}")
        return answer.get("result", {})

    def wait_event(self, method: str, session: str | None, timeout: float, since: int = 0) -> dict:
        """The first event named `method` (for `session`) at index `since` or later in self.events."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.events[since:]:
                    if event.get("method") == method and (session is None or event.get("sessionId") == session):
                        return event
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    raise BrowserError(f"no {method} event within {timeout} s{self._log_tail()}")
                self._changed.wait(remaining)

    def events_named(self, method: str, session: str | None = None) -> list[dict]:
        with self._changed:
            return [event for event in self.events
                    if event.get("method") == method and (session is None or event.get("sessionId") == session)]

    def new_page(self, width: int, height: int) -> "Page":
        target = self.call("Target.createTarget", {"url": "about:blank"})
        session = self.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})["sessionId"]
        page = Page(self, session)
        for domain in ("Page", "Runtime", "Network", "Log"):
            page.call(f"{domain}.enable")
        page.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        return page

    # -------------------------------------------------------------------------- ending
    def _log_tail(self) -> str:
        try:
            text = self.log_path.read_bytes().decode("utf-8", "replace")
        except OSError:
            return ""
        return f"\n--- chromium log tail ({self.log_path}) ---\n{text[-3000:]}" if text.strip() else ""

    def close(self) -> int | None:
        """Asks the browser to quit, then kills whatever is left of its process group."""
        if self.proc.poll() is None and not self._closed:
            try:
                self.call("Browser.close", timeout=3)
            except BrowserError:
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # renderers and helpers it left behind
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(5)
        for descriptor in (self._to_browser, self._from_browser):
            try:
                os.close(descriptor)
            except OSError:
                pass
        self._reader.join(2)
        return self.proc.returncode


class Page:
    """One tab, addressed through its flat protocol session."""

    def __init__(self, browser: Browser, session: str):
        self.browser = browser
        self.session = session

    def call(self, method: str, params: dict | None = None, timeout: float = 10.0) -> dict:
        return self.browser.call(method, params, session=self.session, timeout=timeout)

    def navigate(self, url: str, timeout: float = 15.0) -> None:
        since = len(self.browser.events)
        answer = self.call("Page.navigate", {"url": url}, timeout=timeout)
        if answer.get("errorText"):
            raise BrowserError(f"cannot load {url}: {answer['errorText']}")
        self.browser.wait_event("Page.loadEventFired", self.session, timeout, since)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (JSON-serialisable values only)."""
        answer = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            raise BrowserError(f"evaluating {expression[:80]!r} threw: "
                               f"{details.get('exception', {}).get('description') or details.get('text')}")
        return answer["result"].get("value")

    def screenshot_png(self, full_page: bool = True) -> bytes:
        params: dict = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        return base64.b64decode(self.call("Page.captureScreenshot", params, timeout=20)["data"])
