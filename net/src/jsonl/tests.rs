//! Tests of the JSON Lines server against a real data plane started in this process, spoken to
//! over real HTTP/1.1 with a small blocking client (std `TcpStream`, chunked decoding by hand) so
//! what is checked is what `curl` sees on the wire.

use super::lines::Limits;
use super::{start, start_with_limits, JsonlContext, JsonlError, JsonlServer};
use crate::config::{Config, SowTopicToml};
use crate::runtime::RunningServer;
use crate::stats::ShardStats;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Tests that start a data plane hold this, so two of them never compete for the two cores.
static SERVER_LOCK: Mutex<()> = Mutex::new(());

fn server_lock() -> MutexGuard<'static, ()> {
    SERVER_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// A data plane with one shard, the SOW topic `orders` keyed by `/id`, on a free loopback port.
fn data_plane(name: &str) -> (RunningServer, PathBuf) {
    let folder = std::env::temp_dir().join(format!("tachyon-jsonl-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(&folder).unwrap();
    let mut config = Config {
        data_dir: folder.join("data"),
        ..Config::default()
    };
    config.transport.amps_tcp = "127.0.0.1:0".parse().unwrap();
    config.runtime.shards = 1;
    config.sow.topics = vec![SowTopicToml {
        topic: "orders".into(),
        key_fields: vec!["/id".into()],
        slab_size_bytes: 64 * 1024,
        durability: "transient".into(),
        expiration_seconds: None,
    }];
    config.validate().unwrap();
    let topology = tachyon_numa::Topology::discover();
    let request = tachyon_numa::PlacementRequest {
        shards: Some(1),
        ..Default::default()
    };
    let plan = tachyon_numa::plan(&topology, &request).unwrap();
    let server = crate::runtime::start(config, &plan).unwrap();
    (server, folder)
}

fn jsonl(amps_address: SocketAddr, limits: Limits) -> JsonlServer {
    start_with_limits(
        JsonlContext {
            address: "127.0.0.1:0".parse().unwrap(),
            amps_address,
            control_core: None,
        },
        limits,
    )
    .unwrap()
}

fn connections_open(server: &RunningServer) -> u64 {
    server
        .stats
        .iter()
        .map(|stats| ShardStats::get(&stats.connections_open))
        .sum()
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ------------------------------------------------------------------------ a raw HTTP client

/// How a response body ended.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// The chunked terminator (or the whole Content-Length) arrived.
    Complete,
    /// The connection closed without it: the server cut the stream.
    Cut,
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    ending: Ending,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn json(&self) -> Value {
        assert_eq!(self.header("content-type"), Some("application/json"));
        serde_json::from_str(&self.body).unwrap_or_else(|error| panic!("{error}: {}", self.body))
    }

    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap().to_string()
    }

    fn ndjson(&self) -> Vec<Value> {
        assert_eq!(self.status, 200, "{}", self.body);
        assert_eq!(self.header("content-type"), Some("application/x-ndjson"));
        assert_eq!(self.ending, Ending::Complete);
        self.body
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}"))
            })
            .collect()
    }
}

/// An open response whose body is read as it arrives.
struct Stream {
    reader: BufReader<TcpStream>,
    status: u16,
    headers: Vec<(String, String)>,
    chunked: bool,
    remaining: usize,
    pending: Vec<u8>,
}

impl Stream {
    fn open(address: SocketAddr, method: &str, path: &str, body: &[u8]) -> Stream {
        let mut socket = TcpStream::connect(address).unwrap();
        socket.set_read_timeout(Some(TIMEOUT)).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        socket.write_all(head.as_bytes()).unwrap();
        // A server that answers early (413) may close before taking the whole body.
        let _ = socket.write_all(body);
        let mut reader = BufReader::new(socket);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).unwrap();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (key, value) = line.split_once(':').unwrap();
            headers.push((key.trim().to_string(), value.trim().to_string()));
        }
        let find = |name: &str| {
            headers
                .iter()
                .find(|(key, _): &&(String, String)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.clone())
        };
        let chunked = find("transfer-encoding").is_some_and(|value| value == "chunked");
        let remaining = find("content-length").map_or(0, |value| value.parse().unwrap());
        Stream {
            reader,
            status,
            headers,
            chunked,
            remaining,
            pending: Vec::new(),
        }
    }

    /// The next piece of body, `Ok(None)` at its proper end, `Err(Cut)` when the connection
    /// closed before it.
    fn next_piece(&mut self) -> Result<Option<Vec<u8>>, Ending> {
        if !self.chunked {
            if self.remaining == 0 {
                return Ok(None);
            }
            let mut body = vec![0; self.remaining];
            self.reader.read_exact(&mut body).map_err(|_| Ending::Cut)?;
            self.remaining = 0;
            return Ok(Some(body));
        }
        let mut size_line = String::new();
        match self.reader.read_line(&mut size_line) {
            Ok(0) | Err(_) => return Err(Ending::Cut),
            Ok(_) => {}
        }
        let size = usize::from_str_radix(size_line.trim_end(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
        let mut data = vec![0; size + 2];
        self.reader.read_exact(&mut data).map_err(|_| Ending::Cut)?;
        assert_eq!(&data[size..], b"\r\n", "chunk not followed by CRLF");
        data.truncate(size);
        Ok((size > 0).then_some(data))
    }

    /// The next line of body (without `\n`); `Err` with how the body ended when none is left.
    fn next_line(&mut self) -> Result<String, Ending> {
        loop {
            if let Some(end) = self.pending.iter().position(|&byte| byte == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return Ok(String::from_utf8(line[..end].to_vec()).unwrap());
            }
            match self.next_piece()? {
                Some(piece) => self.pending.extend_from_slice(&piece),
                None => {
                    assert!(self.pending.is_empty(), "body ends without a newline");
                    return Err(Ending::Complete);
                }
            }
        }
    }

    fn finish(mut self) -> Reply {
        let mut body = std::mem::take(&mut self.pending);
        let ending = loop {
            match self.next_piece() {
                Ok(Some(piece)) => body.extend_from_slice(&piece),
                Ok(None) => break Ending::Complete,
                Err(ending) => break ending,
            }
        };
        Reply {
            status: self.status,
            headers: self.headers,
            body: String::from_utf8(body).unwrap(),
            ending,
        }
    }
}

fn request(address: SocketAddr, method: &str, path: &str, body: &[u8]) -> Reply {
    Stream::open(address, method, path, body).finish()
}

fn statuses(reply: &Reply) -> Vec<(u64, String, Option<String>)> {
    reply
        .ndjson()
        .into_iter()
        .map(|status| {
            (
                status["line"].as_u64().unwrap(),
                status["status"].as_str().unwrap().to_string(),
                status["reason"].as_str().map(str::to_string),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------- tests

#[test]
fn publish_subscribe_and_sow_through_a_real_data_plane() {
    let _lock = server_lock();
    let (server, folder) = data_plane("flow");
    let baseline = connections_open(&server);
    let http = jsonl(server.amps_address, Limits::DEFAULT);
    let address = http.address();

    let index = request(address, "GET", "/", b"");
    assert_eq!(index.status, 200);
    assert!(index.body.contains("/subscribe"), "{}", index.body);

    // A subscription is live once its headers arrived: the subscribe was acknowledged first.
    let mut subscriber = Stream::open(
        address,
        "GET",
        "/subscribe?topic=ticks&filter=%2Fn+%3E+1",
        b"",
    );
    assert_eq!(subscriber.status, 200);
    assert_eq!(
        subscriber
            .headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case("content-type"))
            .map(|(_, value)| value.as_str()),
        Some("application/x-ndjson")
    );

    let published = request(
        address,
        "POST",
        "/publish?topic=ticks",
        b"{\"n\":1}\n{\"n\":2}\nnot json\n\n{\n\"n\":3}\n  {\"n\": 4, \"s\": \"a b\"}  \r\n",
    );
    let got = statuses(&published);
    let outcomes: Vec<(u64, &str)> = got
        .iter()
        .map(|(line, status, _)| (*line, status.as_str()))
        .collect();
    // Line 4 is blank; a message may not span lines: "{" alone is not JSON, nor is "\"n\":3}".
    assert_eq!(
        outcomes,
        vec![
            (1, "success"),
            (2, "success"),
            (3, "failure"),
            (5, "failure"),
            (6, "failure"),
            (7, "success")
        ]
    );
    assert!(got[2].2.as_deref().unwrap().starts_with("not valid JSON"));
    assert_eq!(got[0].2, None);

    // The filter passed only n > 1, in publish order, each message on its own line.
    assert_eq!(subscriber.next_line().unwrap(), r#"{"n":2}"#);
    assert_eq!(subscriber.next_line().unwrap(), r#"{"n": 4, "s": "a b"}"#);

    // SOW: a line without the key is refused by the data plane with its own reason.
    let mut body = String::new();
    for (id, qty) in [(1, 5), (2, 1), (3, 9), (4, 7), (5, 3)] {
        body.push_str(&format!("{{\"id\":{id},\"qty\":{qty}}}\n"));
    }
    body.push_str("{\"qty\":100}\n");
    let got = statuses(&request(
        address,
        "POST",
        "/publish?topic=orders",
        body.as_bytes(),
    ));
    assert_eq!(got.len(), 6);
    assert!(
        got[..5].iter().all(|(_, status, _)| status == "success"),
        "{got:?}"
    );
    assert_eq!(got[5].0, 6);
    assert_eq!(got[5].1, "failure");
    assert_eq!(got[5].2.as_deref(), Some("bad sow key"));

    let answer = request(
        address,
        "POST",
        "/sow",
        br#"{"topic":"orders","filter":"/qty > 2","top_n":3,"orderby":"/qty DESC"}"#,
    );
    let ids: Vec<u64> = answer
        .ndjson()
        .iter()
        .map(|record| record["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![3, 4, 1]);
    let everything = request(address, "POST", "/sow", br#"{"topic":"orders"}"#).ndjson();
    assert_eq!(everything.len(), 5);
    let empty = request(
        address,
        "POST",
        "/sow",
        br#"{"topic":"orders","filter":"/qty > 99"}"#,
    );
    assert!(empty.ndjson().is_empty());

    // The data plane's errors, as the binary protocol gives them.
    for (path, body, reason) in [
        (
            "/sow",
            &br#"{"topic":"orders","filter":"/qty >"}"#[..],
            "bad filter",
        ),
        (
            "/sow",
            br#"{"topic":"orders","orderby":"qty DOWN"}"#,
            "invalid order by",
        ),
        ("/sow", br#"{"topic":"ticks"}"#, "not supported"),
        (
            "/subscribe?topic=ticks&filter=%2Fn+%3D%3D%3D",
            b"",
            "bad filter",
        ),
    ] {
        let method = if path == "/sow" { "POST" } else { "GET" };
        let reply = request(address, method, path, body);
        assert_eq!(reply.status, 400, "{path}: {}", reply.body);
        assert_eq!(reply.error(), reason, "{path}");
    }
    // And the JSON Lines server's own.
    for (method, path, body, status, needle) in [
        (
            "POST",
            "/publish",
            &b"{}"[..],
            400,
            "topic query parameter is required",
        ),
        (
            "POST",
            "/publish?topic=t&filter=x",
            b"{}",
            400,
            "unknown query parameter",
        ),
        ("GET", "/subscribe?filter=%2Fa+%3D+1", b"", 400, "topic"),
        (
            "POST",
            "/sow",
            b"{\"topic\":\"orders\",\"limit\":1}",
            400,
            "limit",
        ),
        ("GET", "/publish?topic=t", b"", 405, "method"),
        ("GET", "/nowhere", b"", 404, "/nowhere"),
    ] {
        let reply = request(address, method, path, body);
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.body);
        assert!(
            reply.error().contains(needle),
            "{method} {path}: {}",
            reply.body
        );
    }

    // A subscriber that goes away takes its loopback connection with it.
    let open_with_subscriber = connections_open(&server);
    assert_eq!(
        open_with_subscriber,
        baseline + 1,
        "only the subscription's connection stays open"
    );
    drop(subscriber);
    wait_until("the subscription's loopback connection closed", || {
        connections_open(&server) == baseline
    });

    // Stopping ends open streams cleanly and promptly.
    let mut subscriber = Stream::open(address, "GET", "/subscribe?topic=ticks", b"");
    assert_eq!(subscriber.status, 200);
    let stopping = Instant::now();
    http.stop();
    assert!(
        stopping.elapsed() < Duration::from_millis(1500),
        "{:?}",
        stopping.elapsed()
    );
    assert_eq!(subscriber.next_line(), Err(Ending::Complete));
    server.stop();
    let _ = std::fs::remove_dir_all(folder);
}

#[test]
fn many_lines_stream_their_statuses_in_order() {
    let _lock = server_lock();
    let (server, folder) = data_plane("many");
    let http = jsonl(server.amps_address, Limits::DEFAULT);
    // More lines than PUBLISH_IN_FLIGHT_MAX, so the writer waits for acks several times.
    let count = super::lines::PUBLISH_IN_FLIGHT_MAX * 5 + 7;
    let mut body = String::new();
    for index in 0..count {
        if index % 1000 == 999 {
            body.push_str("{oops\n");
        } else {
            body.push_str(&format!("{{\"i\":{index}}}\n"));
        }
    }
    let got = statuses(&request(
        http.address(),
        "POST",
        "/publish?topic=bulk",
        body.as_bytes(),
    ));
    assert_eq!(got.len(), count);
    for (index, (line, status, _)) in got.iter().enumerate() {
        assert_eq!(*line, index as u64 + 1);
        let expected = if index % 1000 == 999 {
            "failure"
        } else {
            "success"
        };
        assert_eq!(status, expected, "line {line}");
    }

    // A client that sends a large body and leaves without reading its statuses leaves nothing
    // behind: the request's loopback connection closes.
    let baseline = connections_open(&server);
    let body: String = (0..200_000)
        .map(|index| format!("{{\"i\":{index}}}\n"))
        .collect();
    let mut socket = TcpStream::connect(http.address()).unwrap();
    let head = format!(
        "POST /publish?topic=bulk HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).unwrap();
    socket.write_all(body.as_bytes()).unwrap();
    let mut first = [0u8; 12];
    socket.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    drop(socket);
    wait_until("the abandoned publish's loopback connection closed", || {
        connections_open(&server) == baseline
    });
    http.stop();
    server.stop();
    let _ = std::fs::remove_dir_all(folder);
}

#[test]
fn bounds_are_enforced_with_errors_that_name_them() {
    let _lock = server_lock();
    let (server, folder) = data_plane("bounds");
    let limits = Limits {
        publish_body_bytes_max: 1024,
        line_bytes_max: 64,
        sow_request_bytes_max: 128,
        subscriptions_max: 1,
    };
    let http = jsonl(server.amps_address, limits);
    let address = http.address();

    let big = vec![b' '; 2000];
    let reply = request(address, "POST", "/publish?topic=t", &big);
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert!(reply.error().contains("1024 bytes"), "{}", reply.body);

    let long = format!("{{\"pad\":\"{}\"}}", "x".repeat(80));
    let body = format!("{{\"a\":1}}\n{long}\n{{\"a\":2}}\n");
    let got = statuses(&request(
        address,
        "POST",
        "/publish?topic=t",
        body.as_bytes(),
    ));
    assert_eq!(got[0], (1, "success".into(), None));
    assert_eq!((got[1].0, got[1].1.as_str()), (2, "failure"));
    assert!(
        got[1].2.as_deref().unwrap().contains("limit of 64 bytes"),
        "{got:?}"
    );
    assert_eq!(got[2], (3, "success".into(), None));

    let padded = format!(
        "{{\"topic\":\"orders\",\"filter\":\"{}\"}}",
        "x".repeat(200)
    );
    let reply = request(address, "POST", "/sow", padded.as_bytes());
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert!(reply.error().contains("128 bytes"), "{}", reply.body);

    let first = Stream::open(address, "GET", "/subscribe?topic=a", b"");
    assert_eq!(first.status, 200);
    let refused = request(address, "GET", "/subscribe?topic=b", b"");
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(
        refused
            .error()
            .contains("limit of 1 open subscription streams"),
        "{}",
        refused.body
    );
    drop(first);
    // The permit returns once the stream's task saw the client go.
    wait_until("a subscription slot is free again", || {
        let reply = Stream::open(address, "GET", "/subscribe?topic=c", b"");
        reply.status == 200
    });

    // A data plane that goes away cuts the stream: no terminating chunk, so curl reports it.
    let mut cut = Stream::open(address, "GET", "/subscribe?topic=d", b"");
    if cut.status == 503 {
        // The probe's own stream above may still hold the slot for a moment.
        wait_until("the probe's slot is free", || {
            cut = Stream::open(address, "GET", "/subscribe?topic=d", b"");
            cut.status == 200
        });
    }
    server.stop();
    assert_eq!(cut.next_line(), Err(Ending::Cut));

    // With no data plane, requests fail with 503 and say so.
    let reply = request(address, "POST", "/publish?topic=t", b"{}\n");
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(
        reply.error().contains("cannot connect to the data plane"),
        "{}",
        reply.body
    );
    http.stop();
    let _ = std::fs::remove_dir_all(folder);
}

#[test]
fn a_busy_address_is_refused_with_a_hint() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let error = match start(JsonlContext {
        address: taken.local_addr().unwrap(),
        amps_address: "127.0.0.1:9".parse().unwrap(),
        control_core: None,
    }) {
        Err(error) => error,
        Ok(_) => panic!("bound an address already in use"),
    };
    assert!(matches!(error, JsonlError::Bind { .. }));
    assert!(error.to_string().contains("[jsonl] address"), "{error}");
}

#[test]
fn a_wildcard_amps_address_is_reached_over_loopback() {
    assert_eq!(
        super::reachable("0.0.0.0:9007".parse().unwrap()),
        "127.0.0.1:9007".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        super::reachable("[::]:9007".parse().unwrap()),
        "[::1]:9007".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        super::reachable("10.1.2.3:9007".parse().unwrap()),
        "10.1.2.3:9007".parse::<SocketAddr>().unwrap()
    );
}
