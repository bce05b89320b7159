"""Fixtures for the dashboard's browser test: the real `tachyon solo` binary and a real headless
Chromium that loads GET /dashboard from it.

The server is started exactly as the admin API suite starts it: its `Server` class is loaded from
../admin/conftest.py (one way to start the binary, not two), on free loopback ports for AMPS and
the admin API. The browser is Debian's `chromium`, driven over the DevTools protocol on a pipe
(see cdp.py).

Environment:
  TACHYON_BIN               server binary (default: <repo>/target/release/tachyon)
  CHROMIUM_BIN              browser executable (default: /usr/lib/chromium/chromium, then PATH)
  TACHYON_REQUIRE_CHROMIUM  1: a missing browser fails the test instead of skipping it (for CI)
"""

from __future__ import annotations

import importlib.util
import os
import signal
from pathlib import Path

import pytest

import cdp

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ARTIFACTS = HERE / "artifacts"
# The whole test, browser start to server stop, must finish within this.
TIME_BOX_SECONDS = 60


def _load_admin_conftest():
    spec = importlib.util.spec_from_file_location("admin_conftest", REPO / "tests" / "admin" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


admin = _load_admin_conftest()
BIN = admin.BIN
rawamps = admin.rawamps


def pytest_sessionstart(session):
    if not BIN.is_file() or not os.access(BIN, os.X_OK):
        pytest.exit(f"tachyon binary not found or not executable: {BIN} (set TACHYON_BIN)", returncode=2)


class TimeBoxExceeded(Exception):
    pass


@pytest.fixture(autouse=True)
def time_box():
    """Fails a test that runs longer than TIME_BOX_SECONDS; fixtures still clean up after it."""

    def expired(signum, frame):
        raise TimeBoxExceeded(f"the dashboard test ran longer than its {TIME_BOX_SECONDS} s time box")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TIME_BOX_SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def server(tmp_path):
    """A running tachyon with 2 shards, the admin API, and journaled topic `journaled`."""
    last = None
    for attempt in range(3):  # retry only for a lost free-port race
        srv = admin.Server(tmp_path / f"srv-{attempt}", shards=2)
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
    yield srv
    srv.stop()  # a no-op when the test already stopped it
    log = srv.log_text()
    if "panicked at" in log:
        pytest.fail(f"server log contains a panic\n--- server stderr tail ---\n{log[-6000:]}", pytrace=False)


@pytest.fixture
def chromium():
    """The browser executable; skips (or fails, under TACHYON_REQUIRE_CHROMIUM=1) when there is none."""
    executable = cdp.find_chromium()
    if executable is None:
        message = ("chromium is not installed: install Debian's package with "
                   "`apt-get install -y chromium`, or point CHROMIUM_BIN at a Chromium or Chrome binary")
        if os.environ.get("TACHYON_REQUIRE_CHROMIUM") == "1":
            pytest.fail(message + " (TACHYON_REQUIRE_CHROMIUM=1)", pytrace=False)
        pytest.skip(message)
    return executable


@pytest.fixture
def browser(chromium, tmp_path):
    """A running headless Chromium; closed, with every process it started, after the test."""
    instance = cdp.Browser.launch(chromium, tmp_path / "chromium")
    try:
        yield instance
    finally:
        instance.close()
