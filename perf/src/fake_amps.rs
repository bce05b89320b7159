//! A tiny fake AMPS broker for tests: answers `logon` and `subscribe` with the minimal acks the
//! protocol reference (§5.1, §5.3) says real clients accept, and fans each `p` out to the
//! subscriptions on its topic as `{"c":"p","t":..,"sids":..}<payload>`. It exists so the AMPS
//! client is exercised end to end without the real server. Of a subscription's content filter it
//! honours only a trailing `/k = 'NN'` (the benchmark's key predicate), by looking for `"k":"NN"`
//! in the payload; it parses nothing else.
//!
//! A publish with `"a":"persisted"` gets the conflated persisted ack of protocol reference §10,
//! `{"c":"ack","a":"persisted","s":N,"status":"success"}`, after every
//! [`FakeOptions::persisted_ack_every`]-th such publish of its connection (so the last few may
//! never be acked, on purpose), and a failure ack for each one on a topic containing `refused`.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::amps::{
    encode_frame, header_value, split_header, FrameReader, Received, READ_POLL_INTERVAL,
};

/// One subscription: its topic, its id, and the connection to deliver on.
struct Subscription {
    topic: Vec<u8>,
    sub_id: Vec<u8>,
    /// `"k":"NN"` when the filter ends in the key predicate `/k = 'NN'`.
    key_needle: Option<Vec<u8>>,
    stream: TcpStream,
}

/// The payload bytes a filter ending in `/k = 'NN'` requires.
fn key_needle(filter: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(filter).ok()?;
    let key = text.rsplit_once("/k = '")?.1.strip_suffix('\'')?;
    Some(format!(r#""k":"{key}""#).into_bytes())
}

/// How the fake answers.
#[derive(Clone, Copy, Debug)]
pub struct FakeOptions {
    /// Persisted acks go out after every this-many publishes asking for one (per connection).
    pub persisted_ack_every: u64,
}

impl Default for FakeOptions {
    fn default() -> Self {
        Self {
            persisted_ack_every: 1,
        }
    }
}

/// A running fake broker on a loopback port; stops on drop.
pub struct FakeAmps {
    /// Where clients connect.
    pub address: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeAmps {
    /// Binds a loopback port and starts accepting, with the default options.
    pub fn start() -> Self {
        Self::start_with(FakeOptions::default())
    }

    /// Binds a loopback port and starts accepting.
    pub fn start_with(options: FakeOptions) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let address = listener.local_addr().expect("address");
        let stop = Arc::new(AtomicBool::new(false));
        let subscriptions = Arc::new(Mutex::new(Vec::new()));
        let acceptor = thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                let mut connections = Vec::new();
                while !stop.load(Ordering::Acquire) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let stop = Arc::clone(&stop);
                            let subscriptions = Arc::clone(&subscriptions);
                            connections.push(thread::spawn(move || {
                                serve(stream, &stop, &subscriptions, options)
                            }));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(1)),
                    }
                }
                for connection in connections {
                    let _ = connection.join();
                }
            }
        });
        Self {
            address,
            stop,
            acceptor: Some(acceptor),
        }
    }
}

impl Drop for FakeAmps {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Serves one client connection until it closes or the fake stops.
fn serve(
    stream: TcpStream,
    stop: &AtomicBool,
    subscriptions: &Mutex<Vec<Subscription>>,
    options: FakeOptions,
) {
    stream.set_nonblocking(false).expect("blocking");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_read_timeout(Some(READ_POLL_INTERVAL))
        .expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = FrameReader::new(stream);
    let mut persisted_publishes = 0u64;
    while !stop.load(Ordering::Acquire) {
        let frame = match reader.next_frame() {
            Ok(Received::Message(frame)) => frame.to_vec(),
            Ok(Received::Idle) => continue,
            Ok(Received::Closed) | Err(_) => return,
        };
        let Some((header, payload)) = split_header(&frame) else {
            return;
        };
        let field = |key| header_value(header, key).unwrap_or_default().to_vec();
        let command = field("c");
        let command_id = String::from_utf8_lossy(&field("cid")).into_owned();
        match command.as_slice() {
            b"logon" => {
                let ack = format!(
                    r#"{{"c":"ack","cid":"{command_id}","a":"processed","version":"5.3.4.0","status":"success"}}"#
                );
                let _ = writer.write_all(&encode_frame(ack.as_bytes(), b""));
            }
            b"subscribe" => {
                let sub_id = field("sub_id");
                subscriptions.lock().expect("lock").push(Subscription {
                    topic: field("t"),
                    sub_id: sub_id.clone(),
                    key_needle: header_value(header, "filter").and_then(key_needle),
                    stream: writer.try_clone().expect("clone"),
                });
                let ack = format!(
                    r#"{{"c":"ack","a":"processed","cid":"{command_id}","sub_id":"{}","status":"success"}}"#,
                    String::from_utf8_lossy(&sub_id)
                );
                let _ = writer.write_all(&encode_frame(ack.as_bytes(), b""));
            }
            b"p" | b"publish" => {
                let topic = field("t");
                if field("a") == b"persisted" {
                    persisted_publishes += 1;
                    let sequence = String::from_utf8_lossy(&field("s")).into_owned();
                    let ack = if topic.windows(7).any(|window| window == b"refused") {
                        format!(
                            r#"{{"c":"ack","a":"persisted","s":{sequence},"status":"failure","reason":"refused by the fake"}}"#
                        )
                    } else if persisted_publishes.is_multiple_of(options.persisted_ack_every) {
                        format!(
                            r#"{{"c":"ack","a":"persisted","s":{sequence},"status":"success"}}"#
                        )
                    } else {
                        String::new()
                    };
                    if !ack.is_empty() {
                        let _ = writer.write_all(&encode_frame(ack.as_bytes(), b""));
                    }
                }
                for subscription in subscriptions
                    .lock()
                    .expect("lock")
                    .iter_mut()
                    .filter(|s| s.topic == topic)
                    .filter(|s| {
                        s.key_needle.as_ref().is_none_or(|needle| {
                            payload.windows(needle.len()).any(|window| window == needle)
                        })
                    })
                {
                    let delivery = format!(
                        r#"{{"c":"p","t":"{}","sids":"{}"}}"#,
                        String::from_utf8_lossy(&topic),
                        String::from_utf8_lossy(&subscription.sub_id)
                    );
                    let _ = subscription
                        .stream
                        .write_all(&encode_frame(delivery.as_bytes(), payload));
                }
            }
            _ => {}
        }
    }
}
