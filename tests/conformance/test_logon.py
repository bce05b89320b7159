"""Logon (reference §5.1)."""

import re

import AMPS
import pytest

from conftest import unique_name

VERSION_DEFAULT = 99999999  # what the client assumes when the ack has no parseable version


def test_logon_without_credentials(make_client):
    c = make_client()
    v = c.get_server_version()
    assert 0 < v < VERSION_DEFAULT, f"server version number {v}: logon ack must carry a numeric 'version'"


def test_logon_with_credentials_in_uri(server, make_client):
    c = make_client(uri=server.uri_with_credentials("trader1", "s3cret"))
    assert 0 < c.get_server_version() < VERSION_DEFAULT
    # the session is usable
    c.flush(5000)


def test_logon_ack_shape_raw(raw):
    """Processed ack echoes the cid, says success, carries a 4-part dotted version (the JS client needs it)."""
    r = raw()
    ack = r.logon(name=unique_name("rawlogon"), user_id="u1", pw="p1")
    assert ack.get("status") == "success", ack
    v = str(ack.get("version", ""))
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", v), f"logon ack version {v!r} is not 4 dotted numbers: {ack!r}"
    # optional bm must have the '<hash>|<seq>|' shape when present (§5.1, §10)
    if "bm" in ack.header:
        assert re.fullmatch(r"\d+\|\d+\|", str(ack.get("bm"))), ack


def test_logon_accepts_long_key_spellings(raw):
    """§1.2/§16.4: the server accepts long key names (cmd, cmd_id, ack_type)."""
    r = raw()
    r.send({"cmd": "logon", "cmd_id": "L1", "client_name": unique_name("longkeys"), "ack_type": "processed"})
    ack = r.read_ack("L1")
    assert ack.get("status") == "success", ack


def test_many_sequential_sessions(server):
    """Connect/logon/disconnect repeatedly: no leak of names or state (a reconnecting trading app)."""
    name = unique_name("reconnect")
    for _ in range(20):
        c = AMPS.Client(name)
        c.connect(server.uri)
        c.logon(5000)
        c.flush(5000)
        c.disconnect()
