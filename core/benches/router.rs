//! Router micro-benchmarks: finding the subscriptions of a message's topic (exact topic among
//! 1/100/1,000 subscriptions on other topics; a regex subscription served from the pattern cache)
//! and routing one message to 1, 100 and 1,000 filtered subscriptions of which 2 % match.
//!
//! The filtered subscriptions carry five-predicate filters, four shared and one on a key with 50
//! values (`/k = 'NN'`), so each message matches one subscription in 50. The benchmark cycles
//! through messages with every key, so with a single subscription one message in 50 is
//! delivered.
//!
//! `cargo bench -p tachyon-core --bench router -j 1 -- --warm-up-time 1 --measurement-time 3`
//! `cargo test -p tachyon-core --benches` runs each benchmark once, so the setup assertions below
//! never rot.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tachyon_core::filter::{Filter, MessageContext};
use tachyon_core::ids::{ConnectionId, ShardId, SubId};
use tachyon_core::router::{Delivery, DeliveryOptions, Router};
use tachyon_core::topic::TopicSpec;

/// Distinct keys: each filter matches one of them, i.e. 2 % of messages.
const KEYS: usize = 50;

fn connection(slot: u32) -> ConnectionId {
    ConnectionId {
        shard: ShardId(0),
        slot,
        generation: 0,
    }
}

fn topic(name: &str) -> TopicSpec {
    TopicSpec::parse(name.as_bytes()).expect("valid topic")
}

fn plain() -> DeliveryOptions {
    DeliveryOptions::default()
}

/// A ~1 KiB order carrying key `key`; every shared predicate is true for it.
fn message(key: usize) -> Vec<u8> {
    let mut payload =
        format!(r#"{{"k":"{key:02}","sym":"IBM","px":101.5,"side":"B","qty":200,"pad":""#)
            .into_bytes();
    payload.resize(1022, b'x');
    payload.extend_from_slice(br#""}"#);
    payload
}

fn filter(key: usize) -> Filter {
    let text =
        format!("/sym = 'IBM' AND /px > 100 AND /side = 'B' AND /qty >= 100 AND /k = '{key:02}'");
    Filter::compile(&text).expect("valid filter")
}

/// `subscriptions` filtered subscriptions on `orders`, each on its own connection, keys in turn.
fn filtered_router(subscriptions: usize) -> Router {
    let mut router = Router::new();
    for index in 0..subscriptions {
        let options = DeliveryOptions {
            filter: Some(filter(index % KEYS)),
            ..DeliveryOptions::default()
        };
        router.add(
            connection(index as u32),
            SubId::new(format!("s{index}").as_bytes()),
            &topic("orders"),
            options,
        );
    }
    router
}

/// Routes every key's message once and returns the deliveries made.
fn route_every_key(router: &mut Router, messages: &[Vec<u8>], out: &mut Vec<Delivery>) -> usize {
    let context = MessageContext {
        topic: b"orders",
        ..MessageContext::default()
    };
    messages
        .iter()
        .map(|payload| {
            router.route(b"orders", payload, &context, out);
            out.len()
        })
        .sum()
}

fn topic_match(c: &mut Criterion) {
    let context = MessageContext {
        topic: b"orders",
        ..MessageContext::default()
    };
    let payload = message(0);
    let mut out = Vec::new();
    let mut group = c.benchmark_group("router_topic_match");
    group.throughput(Throughput::Elements(1));
    for others in [1usize, 100, 1_000] {
        let mut router = Router::new();
        router.add(
            connection(0),
            SubId::new(b"mine"),
            &topic("orders"),
            plain(),
        );
        for index in 0..others {
            let name = format!("other-{index}");
            router.add(
                connection(index as u32 + 1),
                SubId::new(b"s"),
                &topic(&name),
                plain(),
            );
        }
        router.route(b"orders", &payload, &context, &mut out);
        assert_eq!(
            out.len(),
            1,
            "only the one subscription on the topic matches"
        );
        group.bench_with_input(
            BenchmarkId::new("exact_among_others", others),
            &others,
            |b, _| {
                b.iter(|| {
                    router.route(black_box(b"orders"), &payload, &context, &mut out);
                    out.len()
                })
            },
        );
    }

    let mut router = Router::new();
    router.add(
        connection(0),
        SubId::new(b"all"),
        &topic(r"^orders\..*"),
        plain(),
    );
    router.add(
        connection(1),
        SubId::new(b"eu"),
        &topic(r"^orders\.eu"),
        plain(),
    );
    let context = MessageContext {
        topic: b"orders.us",
        ..MessageContext::default()
    };
    router.route(b"orders.us", &payload, &context, &mut out);
    assert_eq!(out.len(), 1);
    router.route(b"orders.us", &payload, &context, &mut out);
    assert!(
        router.stats().pattern_cache_hits >= 1,
        "the second lookup hits the cache"
    );
    group.bench_function("regex_cache_hit", |b| {
        b.iter(|| {
            router.route(black_box(b"orders.us"), &payload, &context, &mut out);
            out.len()
        })
    });
    group.finish();
}

fn filtered_routing(c: &mut Criterion) {
    let messages: Vec<Vec<u8>> = (0..KEYS).map(message).collect();
    let mut out = Vec::new();
    let mut group = c.benchmark_group("router_filtered_2pct");
    // Per message routed: each iteration routes all 50 messages.
    group.throughput(Throughput::Elements(KEYS as u64));
    for subscriptions in [1usize, 100, 1_000] {
        let mut router = filtered_router(subscriptions);
        // Every subscription matches exactly one of the 50 messages: 2 %.
        assert_eq!(
            route_every_key(&mut router, &messages, &mut out),
            subscriptions
        );
        group.bench_with_input(
            BenchmarkId::new("route_50_messages", subscriptions),
            &subscriptions,
            |b, _| b.iter(|| route_every_key(&mut router, black_box(&messages), &mut out)),
        );
    }
    group.finish();
}

criterion_group!(router, topic_match, filtered_routing);
criterion_main!(router);
