//! The raw TCP relay: the floor any broker is compared against.
//!
//! One in-process thread accepts a subscriber connection and a publisher connection on two
//! loopback ports, then copies bytes from the publisher to the subscriber with a blocking
//! read/`write_all` loop and `TCP_NODELAY`, without parsing anything. A broker does at least this
//! much work per message (one socket read, one socket write, two wake-ups), so the difference
//! between a broker and the relay is what the broker itself adds.
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
    /// The publisher's connection, kept so `stop` can unblock the copying `read`.
    publisher: Arc<Mutex<Option<TcpStream>>>,
    thread: Option<JoinHandle<io::Result<u64>>>,
}

impl Relay {
    /// Binds two loopback ports and starts the relay thread, pinned to `core` when given.
    pub fn start(core: Option<core_affinity::CoreId>) -> Result<Self> {
        let publish_listener =
            TcpListener::bind("127.0.0.1:0").context("binding the relay's publisher port")?;
        let subscribe_listener =
            TcpListener::bind("127.0.0.1:0").context("binding the relay's subscriber port")?;
        let publish_address = publish_listener.local_addr()?;
        let subscribe_address = subscribe_listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let publisher = Arc::new(Mutex::new(None));
        let thread = thread::Builder::new()
            .name("relay".into())
            .spawn({
                let stop = Arc::clone(&stop);
                let publisher = Arc::clone(&publisher);
                move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    run(&publish_listener, &subscribe_listener, &stop, &publisher)
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
        if let Some(publisher) = self.publisher.lock().expect("relay lock").as_ref() {
            // Ends the copying thread's blocking read.
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

/// Runs one relay in the current process: binds both addresses, announces [`READY_LINE`],
/// relays one publisher to one subscriber, and returns the bytes forwarded.
pub fn serve_once(publish_address: SocketAddr, subscribe_address: SocketAddr) -> Result<u64> {
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
        &AtomicBool::new(false),
        &Mutex::new(None),
    )
    .context("relaying")
}

/// Accepts both sides, then copies until the publisher closes, either side fails, or `stop`.
fn run(
    publish_listener: &TcpListener,
    subscribe_listener: &TcpListener,
    stop: &AtomicBool,
    publisher_slot: &Mutex<Option<TcpStream>>,
) -> io::Result<u64> {
    let Some(mut subscriber) = accept(subscribe_listener, stop)? else {
        return Ok(0);
    };
    let Some(mut publisher) = accept(publish_listener, stop)? else {
        return Ok(0);
    };
    *publisher_slot.lock().expect("relay lock") = Some(publisher.try_clone()?);
    if stop.load(Ordering::Acquire) {
        return Ok(0);
    }
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
        subscriber.write_all(&buffer[..count])?;
        forwarded_bytes += count as u64;
    }
    let _ = subscriber.shutdown(Shutdown::Write);
    Ok(forwarded_bytes)
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
    fn relay_stops_cleanly_when_nobody_connects() {
        let relay = Relay::start(None).unwrap();
        assert_eq!(relay.stop().unwrap(), 0);
    }
}
