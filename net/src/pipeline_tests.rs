//! The message path's components, run together without the runtime, must allocate nothing per
//! message once warm: receive buffer → header parse → session → router (with a content filter)
//! → outbound → sendmsg.
//!
//! This test binary's global allocator counts allocations per thread, so tests running in
//! parallel on other threads do not disturb the count.

use crate::connection::{published_message, queue_delivery};
use crate::outbound::{Flushed, Outbound};
use crate::receive::ReceiveBuffer;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use tachyon_core::filter::MessageContext;
use tachyon_core::ids::{ConnectionId, ShardId, SubId};
use tachyon_core::protocol::parse_header;
use tachyon_core::router::{DeliveryOptions, Router};
use tachyon_core::session::{Request, Session, SessionLimits};
use tachyon_core::topic::TopicSpec;

thread_local! {
    static THREAD_ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

struct PerThreadCounting;

// SAFETY: forwards to the system allocator unchanged; only counts calls on this thread.
unsafe impl GlobalAlloc for PerThreadCounting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = THREAD_ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(pointer, layout) }
    }
    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        let _ = THREAD_ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(pointer, layout, size) }
    }
}

#[global_allocator]
static GLOBAL: PerThreadCounting = PerThreadCounting;

fn allocations() -> u64 {
    THREAD_ALLOCATIONS.with(Cell::get)
}

fn frame(header: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = ((header.len() + payload.len()) as u32)
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(payload);
    out
}

#[test]
fn publish_to_send_allocates_nothing_per_message() {
    let (mut publisher_side, server_in) = UnixStream::pair().unwrap();
    let (server_out, mut subscriber_side) = UnixStream::pair().unwrap();
    server_in.set_nonblocking(true).unwrap();
    let mut session = Session::new(SessionLimits::default());
    session
        .handle(&parse_header(br#"{"c":"logon","cid":"1","client_name":"p"}"#).unwrap())
        .unwrap();
    let mut router = Router::new();
    let subscriber = ConnectionId {
        shard: ShardId(0),
        slot: 1,
        generation: 1,
    };
    for id in [&b"s1"[..], b"s2"] {
        router.add(
            subscriber,
            SubId::new(id),
            &TopicSpec::parse(b"ticks").unwrap(),
            DeliveryOptions::default(),
        );
    }
    router.add(
        subscriber,
        SubId::new(b"all"),
        &TopicSpec::parse(b"^tick").unwrap(),
        DeliveryOptions::default(),
    );
    // A content filter on the path: the topic's field table scans each payload once.
    let filter =
        tachyon_core::filter::Filter::compile("/sym = 'IBM' AND /px > 100 AND /side IN ('B','S')")
            .unwrap();
    let filtered = DeliveryOptions {
        filter: Some(filter),
        ..DeliveryOptions::default()
    };
    router.add(
        subscriber,
        SubId::new(b"ibm"),
        &TopicSpec::parse(b"ticks").unwrap(),
        filtered,
    );
    let mut receive = ReceiveBuffer::new(64 * 1024);
    let mut outbound = Outbound::new(64 << 20);
    let mut deliveries = Vec::new();
    let mut drained = vec![0u8; 1 << 20];
    let payload = br#"{"sym":"IBM","px":101.25,"qty":300,"side":"B"}"#;
    let batch: Vec<u8> = frame(r#"{"c":"p","t":"ticks","x":"corr"}"#, payload).repeat(100);

    let mut run = |rounds: usize| {
        let mut delivered = 0;
        for _ in 0..rounds {
            publisher_side.write_all(&batch).unwrap();
            let mut arrived = 0;
            while arrived < batch.len() {
                let count = (&server_in).read(receive.spare()).unwrap();
                receive.filled(count);
                arrived += count;
                while let Some(frame) = receive.next_frame(1 << 20).unwrap() {
                    let header = parse_header(&frame).unwrap();
                    assert!(matches!(session.handle(&header), Ok(Request::Publish)));
                    let message = published_message(&frame, &header);
                    let context = MessageContext {
                        topic: message.topic(),
                        ..MessageContext::default()
                    };
                    router.route(
                        message.topic(),
                        message.payload(),
                        &context,
                        &mut deliveries,
                    );
                    assert_eq!(deliveries.len(), 1);
                    assert_eq!(deliveries[0].sub_ids.len(), 4);
                    for delivery in &deliveries {
                        queue_delivery(&mut outbound, delivery, &message, None).unwrap();
                        delivered += 1;
                    }
                }
                assert_eq!(
                    outbound.flush(server_out.as_raw_fd()).unwrap(),
                    Flushed::All
                );
                while subscriber_side.read(&mut drained).unwrap() == drained.len() {}
            }
        }
        delivered
    };
    run(100);
    let before = allocations();
    let delivered = run(200);
    let allocated = allocations() - before;
    assert_eq!(delivered, 20_000);
    assert_eq!(
        allocated, 0,
        "{allocated} allocations for {delivered} messages"
    );
}
