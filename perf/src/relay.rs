//! The raw TCP relay: the floor any broker is compared against.
//!
//! One in-process thread accepts a subscriber connection and a publisher connection on two
//! loopback ports, then copies bytes from the publisher to the subscriber with a blocking
//! read/`write_all` loop and `TCP_NODELAY`, without parsing anything. A broker does at least this
//! much work per message (one socket read, one socket write, two wake-ups), so the difference
//! between a broker and the relay is what the broker itself adds.
//!
//! For fan-out it accepts M subscribers and writes every chunk it reads to each of them in turn
//! (no per-subscriber queue: a subscriber that stops reading stalls everyone, which is why the
//! slow-subscriber scenario leaves the relay out). With N > 1 publishers each publisher gets a
//! thread that forwards only whole frames (it reads the 4-byte length prefixes, nothing else), so
//! frames from different publishers never interleave.
//!
//! It runs either as a thread of the benchmark ([`Relay::start`], used by tests) or, for
//! measurements, as a child process of its own (`tachyon-bench relay-server`, see
//! [`serve_once`]) so it is scheduled exactly like the other servers (see `systems.rs`).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{Context, Result};

/// Copy buffer: large enough to move a burst of 1 KiB messages in one read.
const COPY_BUFFER_BYTES: usize = 64 * 1024;
/// How often the accept loop checks whether it was asked to stop.
const ACCEPT_POLL_INTERVAL: Duration = Duration::from_millis(1);

/// A running relay; stop it with [`Relay::stop`] (or drop it).
pub struct Relay {
    /// Where the publisher connects.
    pub publish_address: SocketAddr,
    /// Where the subscriber connects.
    pub subscribe_address: SocketAddr,
    stop: Arc<AtomicBool>,
    /// The publishers' connections, kept so `stop` can unblock the copying `read`s.
    publisher: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<io::Result<u64>>>,
}

impl Relay {
    /// Binds two loopback ports and starts the relay thread, pinned to `core` when given.
    #[cfg(test)]
    pub fn start(core: Option<core_affinity::CoreId>) -> Result<Self> {
        Self::start_with(core, Shape::default())
    }

    /// Like [`Self::start`] for `shape.publishers` publishers and `shape.subscribers` subscribers.
    pub fn start_with(core: Option<core_affinity::CoreId>, shape: Shape) -> Result<Self> {
        let publish_listener =
            TcpListener::bind("127.0.0.1:0").context("binding the relay's publisher port")?;
        let subscribe_listener =
            TcpListener::bind("127.0.0.1:0").context("binding the relay's subscriber port")?;
        let publish_address = publish_listener.local_addr()?;
        let subscribe_address = subscribe_listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let publisher = Arc::new(Mutex::new(Vec::new()));
        let thread = thread::Builder::new()
            .name("relay".into())
            .spawn({
                let stop = Arc::clone(&stop);
                let publisher = Arc::clone(&publisher);
                move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    run(
                        &publish_listener,
                        &subscribe_listener,
                        shape,
                        &stop,
                        &publisher,
                    )
                }
            })
            .context("spawning the relay thread")?;
        Ok(Self {
            publish_address,
            subscribe_address,
            stop,
            publisher,
            thread: Some(thread),
        })
    }

    /// Stops the relay and returns how many bytes it forwarded.
    pub fn stop(mut self) -> Result<u64> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<u64> {
        self.stop.store(true, Ordering::Release);
        for publisher in self.publisher.lock().expect("relay lock").iter() {
            // Ends the copying threads' blocking reads.
            let _ = publisher.shutdown(Shutdown::Both);
        }
        match self.thread.take() {
            Some(thread) => match thread.join() {
                Ok(result) => result.context("relay thread"),
                Err(_) => anyhow::bail!("the relay thread panicked"),
            },
            None => Ok(0),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// The line `relay-server` prints on stdout once both ports listen (the parent waits for it).
pub const READY_LINE: &str = "relay ready";

/// How many publishers and subscribers a relay waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Publisher connections (each forwarded to every subscriber).
    pub publishers: usize,
    /// Subscriber connections.
    pub subscribers: usize,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            publishers: 1,
            subscribers: 1,
        }
    }
}

/// Runs one relay in the current process: binds both addresses, announces [`READY_LINE`],
/// relays the publishers to the subscribers, and returns the bytes forwarded.
pub fn serve_once(
    publish_address: SocketAddr,
    subscribe_address: SocketAddr,
    shape: Shape,
) -> Result<u64> {
    let publish_listener = TcpListener::bind(publish_address)
        .with_context(|| format!("binding the publisher port {publish_address}"))?;
    let subscribe_listener = TcpListener::bind(subscribe_address)
        .with_context(|| format!("binding the subscriber port {subscribe_address}"))?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{READY_LINE}")?;
    stdout.flush()?;
    run(
        &publish_listener,
        &subscribe_listener,
        shape,
        &AtomicBool::new(false),
        &Mutex::new(Vec::new()),
    )
    .context("relaying")
}

/// Accepts every subscriber, then every publisher, then copies until the publishers close,
/// a side fails, or `stop`.
fn run(
    publish_listener: &TcpListener,
    subscribe_listener: &TcpListener,
    shape: Shape,
    stop: &AtomicBool,
    publisher_slot: &Mutex<Vec<TcpStream>>,
) -> io::Result<u64> {
    let mut subscribers = Vec::with_capacity(shape.subscribers);
    for _ in 0..shape.subscribers.max(1) {
        let Some(subscriber) = accept(subscribe_listener, stop)? else {
            return Ok(0);
        };
        subscribers.push(subscriber);
    }
    let mut publishers = Vec::with_capacity(shape.publishers);
    for _ in 0..shape.publishers.max(1) {
        let Some(publisher) = accept(publish_listener, stop)? else {
            return Ok(0);
        };
        publisher_slot
            .lock()
            .expect("relay lock")
            .push(publisher.try_clone()?);
        publishers.push(publisher);
    }
    if stop.load(Ordering::Acquire) {
        return Ok(0);
    }
    let forwarded_bytes = if publishers.len() == 1 {
        let publisher = publishers.pop().expect("one publisher");
        copy_chunks(publisher, &mut subscribers, stop)?
    } else {
        let shared = Mutex::new(std::mem::take(&mut subscribers));
        let forwarded = thread::scope(|scope| {
            let copies: Vec<_> = publishers
                .into_iter()
                .map(|publisher| scope.spawn(|| copy_frames(publisher, &shared, stop)))
                .collect();
            let mut total = 0u64;
            for copy in copies {
                total += copy
                    .join()
                    .map_err(|_| io::Error::other("relay thread panicked"))??;
            }
            Ok::<_, io::Error>(total)
        })?;
        subscribers = shared.into_inner().expect("relay lock");
        forwarded
    };
    for subscriber in &subscribers {
        let _ = subscriber.shutdown(Shutdown::Write);
    }
    Ok(forwarded_bytes)
}

/// One publisher: forwards every chunk as read, to each subscriber in turn.
fn copy_chunks(
    mut publisher: TcpStream,
    subscribers: &mut [TcpStream],
    stop: &AtomicBool,
) -> io::Result<u64> {
    let mut buffer = vec![0u8; COPY_BUFFER_BYTES];
    let mut forwarded_bytes = 0u64;
    loop {
        let count = match publisher.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            // A shutdown from `stop` surfaces as an error or EOF: both mean "done".
            Err(_) if stop.load(Ordering::Acquire) => break,
            Err(error) => return Err(error),
        };
        for subscriber in subscribers.iter_mut() {
            subscriber.write_all(&buffer[..count])?;
        }
        forwarded_bytes += count as u64;
    }
    Ok(forwarded_bytes)
}

/// One of several publishers: forwards whole frames only, under the subscribers' lock, so frames
/// of different publishers never interleave.
fn copy_frames(
    mut publisher: TcpStream,
    subscribers: &Mutex<Vec<TcpStream>>,
    stop: &AtomicBool,
) -> io::Result<u64> {
    let mut buffer = vec![0u8; COPY_BUFFER_BYTES];
    let mut end = 0;
    let mut forwarded_bytes = 0u64;
    loop {
        if end == buffer.len() {
            buffer.resize(buffer.len() * 2, 0);
        }
        let count = match publisher.read(&mut buffer[end..]) {
            Ok(0) => break,
            Ok(count) => count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) if stop.load(Ordering::Acquire) => break,
            Err(error) => return Err(error),
        };
        end += count;
        let whole = whole_frames_len(&buffer[..end]);
        if whole > 0 {
            for subscriber in subscribers.lock().expect("relay lock").iter_mut() {
                subscriber.write_all(&buffer[..whole])?;
            }
            forwarded_bytes += whole as u64;
            buffer.copy_within(whole..end, 0);
            end -= whole;
        }
    }
    Ok(forwarded_bytes)
}

/// Length of the longest prefix of `bytes` made of complete length-prefixed frames.
fn whole_frames_len(bytes: &[u8]) -> usize {
    let mut position = 0;
    while let Some(prefix) = bytes.get(position..position + 4) {
        let length = u32::from_be_bytes(prefix.try_into().expect("4 bytes")) as usize;
        if position + 4 + length > bytes.len() {
            break;
        }
        position += 4 + length;
    }
    position
}

/// Accepts one connection, polling so a stop request is noticed; `None` when stopped first.
fn accept(listener: &TcpListener, stop: &AtomicBool) -> io::Result<Option<TcpStream>> {
    listener.set_nonblocking(true)?;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                stream.set_nodelay(true)?;
                return Ok(Some(stream));
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                if stop.load(Ordering::Acquire) {
                    return Ok(None);
                }
                thread::sleep(ACCEPT_POLL_INTERVAL);
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amps::{encode_frame, AmpsPublisher, AmpsSubscriber, Received};

    #[test]
    fn relay_forwards_bytes_unchanged() {
        let relay = Relay::start(None).unwrap();
        let mut subscriber = TcpStream::connect(relay.subscribe_address).unwrap();
        let mut publisher = TcpStream::connect(relay.publish_address).unwrap();
        let mut sent = Vec::new();
        for index in 0..5u32 {
            let frame = encode_frame(
                format!(r#"{{"c":"p","t":"bench"}}message {index}"#).as_bytes(),
                b"",
            );
            publisher.write_all(&frame).unwrap();
            sent.extend_from_slice(&frame);
        }
        drop(publisher);
        let mut received = Vec::new();
        subscriber.read_to_end(&mut received).unwrap();
        assert_eq!(received, sent);
        assert_eq!(relay.stop().unwrap(), sent.len() as u64);
    }

    #[test]
    fn relay_carries_amps_frames_to_the_frame_parser() {
        let relay = Relay::start(None).unwrap();
        let timeout = Duration::from_secs(5);
        let mut subscriber = AmpsSubscriber::raw(relay.subscribe_address, timeout).unwrap();
        let mut publisher =
            AmpsPublisher::connect(relay.publish_address, "bench", 128, false, timeout).unwrap();
        for seq in 0..3 {
            publisher.publish(seq, seq * 1000).unwrap();
        }
        for seq in 0..3 {
            loop {
                match subscriber.next_payload().unwrap() {
                    Received::Message(payload) => {
                        assert_eq!(crate::payload::decode(payload), Some((seq, seq * 1000)));
                        break;
                    }
                    Received::Idle => {}
                    Received::Closed => panic!("relay closed early"),
                }
            }
        }
        drop(publisher);
        relay.stop().unwrap();
    }

    #[test]
    fn whole_frames_stop_before_a_partial_frame() {
        let mut bytes = encode_frame(b"{}", b"one");
        let first = bytes.len();
        bytes.extend_from_slice(&encode_frame(b"{}", b"two"));
        let two = bytes.len();
        bytes.extend_from_slice(&encode_frame(b"{}", b"three")[..6]);
        assert_eq!(whole_frames_len(&bytes), two);
        assert_eq!(whole_frames_len(&bytes[..first + 2]), first);
        assert_eq!(whole_frames_len(&[]), 0);
    }

    #[test]
    fn relay_fans_two_publishers_out_to_three_subscribers() {
        let shape = Shape {
            publishers: 2,
            subscribers: 3,
        };
        let relay = Relay::start_with(None, shape).unwrap();
        let mut subscribers: Vec<TcpStream> = (0..3)
            .map(|_| TcpStream::connect(relay.subscribe_address).unwrap())
            .collect();
        let mut publishers: Vec<TcpStream> = (0..2)
            .map(|_| TcpStream::connect(relay.publish_address).unwrap())
            .collect();
        let mut frames = 0;
        for index in 0..20u32 {
            for (which, publisher) in publishers.iter_mut().enumerate() {
                let frame = encode_frame(format!("{{}}p{which}-{index}").as_bytes(), b"");
                publisher.write_all(&frame).unwrap();
                frames += 1;
            }
        }
        drop(publishers);
        for subscriber in &mut subscribers {
            let mut received = Vec::new();
            subscriber.read_to_end(&mut received).unwrap();
            // Every frame arrives whole: the stream splits into exactly `frames` frames.
            let mut reader = crate::amps::FrameReader::new(io::Cursor::new(received));
            let mut count = 0;
            while let Received::Message(_) = reader.next_frame().unwrap() {
                count += 1;
            }
            assert_eq!(count, frames);
        }
        relay.stop().unwrap();
    }

    #[test]
    fn relay_stops_cleanly_when_nobody_connects() {
        let relay = Relay::start(None).unwrap();
        assert_eq!(relay.stop().unwrap(), 0);
    }
}
