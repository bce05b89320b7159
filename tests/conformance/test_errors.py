"""Bad input and unsupported commands (reference §5.9, §6, §11)."""

import os
import subprocess
import sys
import textwrap
import time

import AMPS
import pytest

import rawamps
from support import Collector, run_with_deadline

SENTINEL = b'{"sentinel":true}'


# ----------------------------------------------------------------------------- unknown command
def test_unknown_command_gets_failure_ack_raw(raw):
    r = raw()
    r.logon("raw-bogus")
    r.send(b'{"c":"bogus","cid":"9","a":"processed"}')
    ack = r.read_ack("9", timeout=5)
    assert ack.get("status") == "failure", ack
    assert ack.get("reason") == "invalid command", ack


def test_unknown_command_keeps_connection_raw(raw):
    """A single unknown command is rejected, not fatal: the session stays usable (trading-bus choice)."""
    r = raw()
    r.logon("raw-bogus2")
    r.send(b'{"c":"bogus","cid":"9","a":"processed"}')
    r.read_ack("9", timeout=5)
    ack, _ = r.flush(timeout=5)
    assert ack.get("status") in (None, "success"), ack


# ----------------------------------------------------------------------------- invalid topic
def test_subscribe_without_topic_raises_invalid_topic(make_client):
    c = make_client()
    with pytest.raises(AMPS.InvalidTopicException):
        run_with_deadline(lambda: c.subscribe(lambda m: None, "", sub_id="nt", timeout=5000), 8, "subscribe without topic")
    c.flush(5000)  # connection still usable


def test_subscribe_without_topic_reason_raw(raw):
    r = raw()
    r.logon("raw-notopic")
    ack = r.subscribe(None, "nt")
    assert ack.get("status") == "failure", ack
    assert ack.get("reason") == "invalid topic", ack
    assert ack.get("sub_id") == "nt", "acks echo the command's sub_id (§8)"


# ----------------------------------------------------------------------------- before logon
def test_subscribe_before_logon_refused_raw(raw):
    r = raw()
    r.send({"c": "subscribe", "t": "conf.early", "cid": "early1", "a": "processed", "sub_id": "e"})
    try:
        ack = r.read_ack("early1", timeout=5)
    except rawamps.Closed:
        pytest.fail(f"server closed the connection without the failure ack; frames: {r.frames!r}")
    assert ack.get("status") == "failure", ack
    assert ack.get("reason") == "logon required", ack


def test_publish_before_logon_not_delivered(raw, make_client):
    sub, pub = make_client(), make_client()
    col = Collector()
    sub.subscribe(col, "conf.early.pub", timeout=5000)
    r = raw()
    r.publish("conf.early.pub", b'{"sneaky":1}')
    try:
        r.read_until_closed(2.0)  # may or may not be closed; either is fine
    except AssertionError:
        pass
    pub.publish("conf.early.pub", SENTINEL)
    got = col.wait_data(SENTINEL, 10)
    assert [g.data for g in got] == [SENTINEL], "a publish from a connection that never logged on was delivered"


# ----------------------------------------------------------------------------- not yet supported
def _assert_command_exception_quickly(fn, what):
    t0 = time.monotonic()
    with pytest.raises(AMPS.AMPSException) as ei:
        run_with_deadline(fn, 6, what)
    took = time.monotonic() - t0
    assert not isinstance(ei.value, AMPS.TimedOutException), f"{what}: server never answered ({ei.value!r})"
    assert not isinstance(ei.value, AMPS.ConnectionException), f"{what}: connection dropped ({ei.value!r})"
    assert isinstance(ei.value, AMPS.CommandException), f"{what}: {type(ei.value).__name__}: {ei.value}"
    assert took < 3.0, f"{what}: failure took {took:.2f}s"
    return ei.value


def test_sow_query_with_handler_fails_fast(make_client):
    c = make_client()
    _assert_command_exception_quickly(lambda: c.sow(lambda m: None, "conf.sow", timeout=5000), "sow(handler)")
    c.flush(5000)


def test_sow_query_iterator_fails_fast(make_client):
    c = make_client()
    _assert_command_exception_quickly(lambda: list(c.sow("conf.sow", timeout=5000)), "sow() iterator")


def test_execute_sow_command_fails_fast(make_client):
    c = make_client()
    _assert_command_exception_quickly(
        lambda: list(c.execute(AMPS.Command("sow").set_topic("conf.sow").set_timeout(5000))), "execute(Command('sow'))"
    )


def test_sow_and_subscribe_fails_fast(make_client):
    c = make_client()
    _assert_command_exception_quickly(
        lambda: c.sow_and_subscribe(lambda m: None, "conf.sow", timeout=5000), "sow_and_subscribe"
    )


def test_bookmark_subscribe_fails_fast(make_client):
    c = make_client()
    _assert_command_exception_quickly(
        lambda: c.bookmark_subscribe(lambda m: None, "conf.bm", "0", timeout=5000), "bookmark_subscribe"
    )
    c.flush(5000)


def test_unsupported_reason_is_not_supported_raw(raw):
    r = raw()
    r.logon("raw-unsupported")
    r.send({"c": "sow", "t": "conf.sow", "cid": "q1", "a": "processed,completed", "query_id": "q1", "batch_size": 10})
    ack = r.read_ack("q1", timeout=5)
    assert (ack.get("status"), ack.get("reason")) == ("failure", "not supported"), ack
    r.send({"c": "subscribe", "t": "conf.bm", "cid": "b1", "a": "processed", "sub_id": "b1", "bookmark": "0"})
    ack = r.read_ack("b1", timeout=5)
    assert (ack.get("status"), ack.get("reason")) == ("failure", "not supported"), ack


def _send_sow_delete(r):
    r.send({"c": "sow_delete", "t": "conf.sow", "cid": "7", "filter": "/id = 4", "a": "processed,stats",
            "sub_id": "7", "query_id": "7"})


def test_sow_delete_fails_not_supported_raw(raw):
    r = raw()
    r.logon("raw-sowdel")
    _send_sow_delete(r)
    p = r.read_ack("7", "processed", timeout=5)
    assert (p.get("status"), p.get("reason")) == ("failure", "not supported"), p


def test_sow_delete_failure_also_sends_requested_stats_ack_raw(raw):
    """sow_delete asks for processed,stats. Every requested ack type gets its ack, failures included
    (§5.6: a sow_delete caller without its stats ack returns an invalid Message and segfaults)."""
    r = raw()
    r.logon("raw-sowdel-stats")
    _send_sow_delete(r)
    r.read_ack("7", "processed", timeout=5)
    s = r.read_ack("7", "stats", timeout=5)
    assert s.get("status") == "failure", s


def test_sow_delete_python_client_does_not_crash(server):
    """Run the real client's sow_delete in a child interpreter (a missing stats ack segfaults it)."""
    code = textwrap.dedent(f"""
        import AMPS, sys
        c = AMPS.Client("sowdel-child")
        c.connect({server.uri!r}); c.logon(5000)
        try:
            m = c.sow_delete("conf.sow", "/id = 4", 3000)
            print("RESULT", m.get_ack_type(), m.get_status(), m.get_reason())
        except AMPS.TimedOutException as e:
            print("TIMEOUT", e)
        except AMPS.AMPSException as e:
            print("EXC", type(e).__name__, e)
        sys.stdout.flush()
        c.disconnect()
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, f"client process died with {p.returncode} (negative = signal): {p.stdout}{p.stderr}"
    out = p.stdout.strip()
    assert not out.startswith("TIMEOUT"), out
    assert out.startswith("EXC") or ("failure" in out), out


def test_publish_without_topic_with_ack_raw(raw):
    r = raw()
    r.logon("raw-pub-notopic")
    r.send({"c": "p", "cid": "pn", "a": "processed"}, b'{"x":1}')
    ack = r.read_ack("pn", timeout=5)
    assert (ack.get("status"), ack.get("reason")) == ("failure", "invalid topic"), ack
    ack, _ = r.flush()  # still usable


def test_ack_echo_rules_raw(raw):
    """§8: acks echo cid, and sub_id/query_id only when the command had them (JS routes on them)."""
    r = raw()
    r.logon("raw-echo")
    ack = r.subscribe("conf.echo", "E1")
    assert ack.get("cid") and ack.get("sub_id") == "E1" and ack.get("status") == "success", ack
    assert "query_id" not in ack.header, ack
    f, _ = r.flush()
    assert "sub_id" not in f.header and "query_id" not in f.header, f
