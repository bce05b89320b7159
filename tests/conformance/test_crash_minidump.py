"""A fatal signal writes a minidump before the process dies: SIGSEGV or SIGABRT reaches the crash
handler, the crash thread writes `<minidump_dir>/*.minidump.txt` (reason, signal details, every
thread, user-space backtraces), logs where, and the process still dies by that signal.

These tests start their own server (not the `server` fixture, whose teardown requires a clean
exit after SIGTERM) and close its log files themselves."""

from __future__ import annotations

import re
import resource
import signal
import subprocess

import pytest

from conftest import _start_server

CRASH_TOML = """
[watchdog]
minidump_dir = "dumps"
"""


@pytest.fixture
def no_core_files():
    """The deliberate crashes must not leave core files (the server inherits the limit)."""
    before = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, before[1]))
    yield
    resource.setrlimit(resource.RLIMIT_CORE, before)


@pytest.mark.hard_timeout(120)
@pytest.mark.parametrize("signum", [signal.SIGSEGV, signal.SIGABRT], ids=["SIGSEGV", "SIGABRT"])
def test_a_fatal_signal_writes_a_minidump_then_the_process_dies_by_it(tmp_path, no_core_files, signum):
    name = signal.Signals(signum).name
    srv = _start_server(tmp_path, 1, CRASH_TOML)
    try:
        srv.wait_for_log(r"admin API on http://", timeout=10)
        srv.proc.send_signal(signum)
        # The dump waits for a debugger to collect backtraces (at most 20 s), then the process dies.
        try:
            rc = srv.proc.wait(60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"tachyon still runs 60 s after {name}; log tail:\n{srv.plain_log()[-4000:]}")
    finally:
        if srv.alive():
            srv.proc.kill()
        srv.stop()  # the process is gone: this only closes the log files

    log = srv.plain_log()
    assert rc == -signum, f"expected death by {name} (status {-signum}), got status {rc}; log tail:\n{log[-4000:]}"
    assert "stopped cleanly" not in log, "a fatal signal must not look like a clean stop"

    folder = srv.workdir / "dumps"
    files = sorted(folder.glob("*.minidump.txt")) if folder.is_dir() else []
    assert len(files) == 1, f"exactly one minidump, got {files}; log tail:\n{log[-4000:]}"
    text = files[0].read_text()
    assert f"reason: fatal signal {name}" in text, text[:2000]
    # Sent with kill(): the detail names the sender (this test process) and the receiving thread.
    assert re.search(rf"^fatal signal {name} \(.*\), si_code 0 \(SI_USER", text, re.M), text[:2000]
    assert re.search(r"^sent by: pid \d+ uid \d+$", text, re.M), text[:2000]
    assert re.search(r'^thread: \d+ "[^"]+"$', text, re.M), text[:2000]
    assert "## threads (/proc/self/task)" in text
    assert '"tachyon-shard-0"' in text, "the thread list names the shard threads"
    assert '"tachyon-crash"' in text, "the thread list names the crash thread"
    assert "## user-space backtraces" in text
    if "(from eu-stack)" in text or "(from gdb)" in text:
        # The receiving thread is parked in the handler while its backtrace is taken.
        assert "on_fatal_signal" in text, text[text.index("## user-space backtraces"):][:4000]

    written = re.search(rf"fatal signal {name} on thread \d+ .*minidump written (\S+)", log)
    assert written, f"the log names the minidump; log tail:\n{log[-4000:]}"
    assert written.group(1) == str(files[0]), (written.group(1), files[0])
    assert not re.search(r"panicked at", log), "a fatal signal is not a panic"
