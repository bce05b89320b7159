//! Wire-protocol micro-benchmarks: cutting a frame out of a receive buffer and parsing the header
//! of a typical publish (the work the server does for every inbound message), and writing the
//! header of a delivery (the work it does for every outbound one). CRC32C is not in core yet, so
//! there is no checksum benchmark.
//!
//! `cargo bench -p tachyon-core --bench protocol -j 1 -- --warm-up-time 1 --measurement-time 3`
//! `cargo test -p tachyon-core --benches` runs each benchmark once, so the setup assertions below
//! never rot.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tachyon_core::ids::SubId;
use tachyon_core::protocol::keys::Key;
use tachyon_core::protocol::reply::write_delivery_header;
use tachyon_core::protocol::{cut_frame, parse_header, FRAME_LENGTH_BYTES};

/// The server's default largest frame (16 MiB).
const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;

/// A publish as the Python and C clients send it: short keys, a topic, a publish-store sequence
/// number and a correlation id, followed by a ~1 KiB JSON payload.
fn publish_frame() -> Vec<u8> {
    let header = br#"{"c":"p","t":"orders","s":1234567,"x":"corr-77812","a":"persisted"}"#;
    let mut payload = br#"{"sym":"IBM","px":101.25,"side":"B","qty":200,"pad":""#.to_vec();
    payload.resize(1000, b'x');
    payload.extend_from_slice(br#""}"#);
    let length = (header.len() + payload.len()) as u32;
    let mut frame = length.to_be_bytes().to_vec();
    frame.extend_from_slice(header);
    frame.extend_from_slice(&payload);
    frame
}

/// Cuts the first frame and parses its header; returns (topic length, payload length).
fn cut_and_parse(buffer: &[u8]) -> (usize, usize) {
    let length = cut_frame(buffer, FRAME_BYTES_MAX)
        .expect("valid frame")
        .expect("complete frame");
    let message = &buffer[FRAME_LENGTH_BYTES..FRAME_LENGTH_BYTES + length];
    let header = parse_header(message).expect("valid header");
    let topic = header.bytes(Key::Topic).expect("topic present");
    (topic.len(), message.len() - header.payload_offset)
}

fn benches(c: &mut Criterion) {
    let frame = publish_frame();
    // Setup checks: run once under `cargo test --benches` too.
    let (topic_len, payload_len) = cut_and_parse(&frame);
    assert_eq!(topic_len, "orders".len());
    assert_eq!(payload_len, 1002);
    // A buffer holding a partial second frame behind the first, as a socket read leaves it.
    let mut buffer = frame.clone();
    buffer.extend_from_slice(&frame[..100]);
    assert_eq!(cut_and_parse(&buffer), (topic_len, payload_len));

    let mut group = c.benchmark_group("protocol");
    group.throughput(Throughput::Elements(1));
    group.bench_function("cut_frame_and_parse_publish_header", |b| {
        b.iter(|| cut_and_parse(black_box(&buffer)))
    });

    let sub_ids = [SubId::new(b"s1")];
    let mut out = Vec::with_capacity(256);
    write_delivery_header(&mut out, b"orders", &sub_ids, None, None, None, None, 1002);
    let length = u32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
    assert_eq!(
        length,
        out.len() - FRAME_LENGTH_BYTES + 1002,
        "prefix counts the payload"
    );
    let written = parse_header(&out[FRAME_LENGTH_BYTES..]).expect("the server's own header parses");
    assert_eq!(written.bytes(Key::Topic), Some(&b"orders"[..]));
    group.bench_function("write_delivery_header_one_sub", |b| {
        b.iter(|| {
            out.clear();
            write_delivery_header(
                &mut out,
                black_box(b"orders"),
                &sub_ids,
                None,
                None,
                None,
                None,
                1002,
            );
            out.len()
        })
    });
    let many: Vec<SubId> = (0..4)
        .map(|i| SubId::new(format!("sub-{i}").as_bytes()))
        .collect();
    group.bench_function("write_delivery_header_four_subs_with_timestamp", |b| {
        b.iter(|| {
            out.clear();
            write_delivery_header(
                &mut out,
                black_box(b"orders"),
                &many,
                None,
                None,
                Some(b"corr-77812"),
                Some(1_763_769_600_123_456_789),
                1002,
            );
            out.len()
        })
    });
    group.finish();
}

criterion_group!(protocol, benches);
criterion_main!(protocol);
