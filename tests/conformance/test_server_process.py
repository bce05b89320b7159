"""The process contract: `tachyon solo --config FILE`, logs on stderr, SIGTERM -> exit 0."""

import json
import socket
import subprocess
import threading
import time

import AMPS
import pytest

import rawamps
from conftest import BIN, Server, _start_server, free_port, unique_name
from support import Collector


def _run_solo(config_path, timeout=15):
    return subprocess.run([str(BIN), "solo", "--config", str(config_path)], capture_output=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_log_has_no_ansi_colours_when_not_a_terminal(server, make_client):
    make_client()
    log = server.log_text()
    assert log.strip(), "server wrote nothing to stderr"
    assert "\x1b[" not in log, ("stderr is a file, not a terminal, yet the log contains ANSI colour codes: "
                                f"{log.splitlines()[0][:160]!r}")


def test_log_names_logged_on_client(server, make_client):
    name = unique_name("lognamed")
    make_client(name=name)
    server.wait_for_log(name, 5)


def test_missing_config_file_fails_fast(tmp_path):
    p = _run_solo(tmp_path / "nope.toml")
    assert p.returncode != 0
    assert "nope.toml" in p.stderr.decode("utf-8", "replace"), p.stderr[-2000:]


def test_invalid_config_fails_fast(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('data_dir = "x"\n[transport\namps_tcp = 127.0.0.1:1\n')
    p = _run_solo(cfg)
    assert p.returncode != 0
    assert p.stderr.strip(), "no error message on stderr"


def test_port_in_use_fails_fast(tmp_path):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    try:
        cfg = tmp_path / "t.toml"
        cfg.write_text(f'data_dir = {json.dumps(str(tmp_path / "data"))}\n[transport]\n'
                       f'amps_tcp = "127.0.0.1:{port}"\n[runtime]\nshards = 1\n')
        p = _run_solo(cfg)
        err = p.stderr.decode("utf-8", "replace")
        assert p.returncode != 0, f"second listener on a taken port exited 0: {err[-2000:]}"
        assert str(port) in err, f"error does not name the address: {err[-2000:]}"
    finally:
        blocker.close()


def test_data_dir_is_exclusive(tmp_path, server):
    cfg = tmp_path / "second.toml"
    cfg.write_text(f'data_dir = {json.dumps(str(server.data_dir))}\n[transport]\n'
                   f'amps_tcp = "127.0.0.1:{free_port()}"\n[runtime]\nshards = 1\n')
    p = _run_solo(cfg)
    assert p.returncode != 0, "a second server started on a data_dir that is in use"


@pytest.mark.parametrize("shards", [1, 2])
def test_sigterm_under_load_exits_0(tmp_path, shards):
    """SIGTERM while clients are subscribed, publishing, half-way through a frame, or silent."""
    srv = _start_server(tmp_path, shards)
    clients = []
    stop = threading.Event()
    try:
        sub = AMPS.Client(unique_name("sigsub"))
        sub.connect(srv.uri)
        sub.logon(5000)
        clients.append(sub)
        col = Collector()
        sub.subscribe(col, "conf.sigterm", timeout=5000)
        pub = AMPS.Client(unique_name("sigpub"))
        pub.connect(srv.uri)
        pub.logon(5000)
        clients.append(pub)

        def publish_forever():
            i = 0
            while not stop.is_set():
                try:
                    pub.publish("conf.sigterm", f'{{"i":{i}}}')
                except Exception:
                    return
                i += 1

        t = threading.Thread(target=publish_forever, daemon=True)
        t.start()
        half = rawamps.RawConn(srv.host, srv.port)
        half.logon("sig-half")
        half.send_bytes(b"\x00\x00\x01\x00" + b'{"c":"p","t":"conf.sigterm"}')
        anon = rawamps.RawConn(srv.host, srv.port)  # never logs on
        col.wait_count(100, 10)
        rc, took = srv.stop()
        stop.set()
        assert rc == 0, f"exit status {rc} after SIGTERM under load (None = had to be killed); log:\n{srv.plain_log()[-4000:]}"
        assert took < 10
        # connections are closed, not left hanging
        for r in (half, anon):
            try:
                r.read_until_closed(3)
            except rawamps.FrameTimeout as e:
                raise AssertionError(f"connection still open after the server exited: {e}")
            r.close()
    finally:
        stop.set()
        if srv.alive():
            srv.proc.kill()
        for c in clients:
            try:
                c.disconnect()
            except Exception:
                pass
