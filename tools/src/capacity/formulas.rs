//! The sizing formulas, as pure functions of a [`Workload`].
//!
//! Each estimate keeps its terms, one named field per consumer, so the report can show where the
//! bytes go and a test can check each term. Byte figures are exact integers (u128, so no product
//! of plausible inputs overflows); network figures involve ratios and rates and are f64. This module
//! does no parsing and no printing.

use serde::Serialize;

/// Memory the server itself takes before any data: binary, start-up state, thread stacks.
pub const MEMORY_BASE_BYTES: u128 = 1 << 30;
/// Memory per connected client: buffers and bookkeeping.
pub const MEMORY_PER_CLIENT_BYTES: u128 = 4096;
/// Memory per queued message: queue metadata.
pub const MEMORY_PER_QUEUED_MESSAGE_BYTES: u128 = 196;
/// Header bytes of a SOW record inside a slab.
pub const SOW_RECORD_HEADER_BYTES: u64 = 64;
/// Floor of the largest SOW message, whatever the slab size.
pub const SOW_MESSAGE_MAX_FLOOR_BYTES: u64 = 1 << 20;
/// Journal framing and index overhead per retained message.
pub const JOURNAL_OVERHEAD_PER_MESSAGE_BYTES: u128 = 512;

/// Every input of the formulas, in base units (bytes, counts, per second).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workload {
    /// S: average message size.
    pub message_size_bytes: u64,
    /// M: messages held in all SOW topics.
    pub sow_messages: u64,
    /// C: connected clients.
    pub clients: u64,
    /// TMemLimit: total client message memory limit.
    pub client_memory_bytes: u64,
    /// J: journal size.
    pub journal_size_bytes: u64,
    /// Q: messages held in queues.
    pub queued_messages: u64,
    /// Cores with a SOW slab preallocated.
    pub cores: u64,
    /// SlabSize: SOW slab size.
    pub slab_size_bytes: u64,
    /// N: messages retained in the transaction log.
    pub retained_messages: u64,
    /// R: messages published per second.
    pub publish_rate_per_second: f64,
    /// Mr: fraction of subscriptions a message matches.
    pub match_ratio: f64,
    /// Ns: subscriptions.
    pub subscriptions: u64,
    /// Mq: records returned per SOW query.
    pub query_records: u64,
    /// Qs: SOW queries per second.
    pub query_rate_per_second: f64,
}

/// `1 GiB + 2·S·M + C·4096 + TMemLimit + 2·J + 196·Q`, term by term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemoryEstimate {
    /// 1 GiB for the server itself.
    pub base_bytes: u128,
    /// 2·S·M: SOW messages plus their indexes.
    pub sow_bytes: u128,
    /// C·4096: per-client state.
    pub clients_bytes: u128,
    /// TMemLimit: client message buffers.
    pub client_messages_bytes: u128,
    /// 2·J: the journal kept in memory, twice.
    pub journal_bytes: u128,
    /// 196·Q: queue metadata.
    pub queued_bytes: u128,
    /// The sum.
    pub total_bytes: u128,
}

/// SOW storage on disk: fully packed slabs at best, one slab per message at worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SowStorageEstimate {
    /// `S·M + Cores·SlabSize`.
    pub min_bytes: u128,
    /// `(S + SlabSize)·M`.
    pub max_bytes: u128,
    /// `SlabSize − 64`, never below 1 MiB.
    pub message_max_bytes: u64,
}

/// `R·S·(1 + Mr·Ns) + Mq·S·Qs`, term by term, in bytes per second.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct NetworkEstimate {
    /// R·S: publishes coming in.
    pub publish_bytes_per_second: f64,
    /// R·S·Mr·Ns: deliveries to matching subscribers.
    pub delivery_bytes_per_second: f64,
    /// Mq·S·Qs: SOW query results.
    pub query_bytes_per_second: f64,
    /// The sum.
    pub total_bytes_per_second: f64,
}

/// All estimates for one workload.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimates {
    /// Memory.
    pub memory: MemoryEstimate,
    /// SOW storage.
    pub sow_storage: SowStorageEstimate,
    /// `(S + 512)·N`: transaction log on disk.
    pub transaction_log_bytes: u128,
    /// Network.
    pub network: NetworkEstimate,
}

/// Memory estimate.
pub fn memory(workload: &Workload) -> MemoryEstimate {
    let size = workload.message_size_bytes as u128;
    let estimate = MemoryEstimate {
        base_bytes: MEMORY_BASE_BYTES,
        sow_bytes: size
            .saturating_mul(workload.sow_messages as u128)
            .saturating_mul(2),
        clients_bytes: workload.clients as u128 * MEMORY_PER_CLIENT_BYTES,
        client_messages_bytes: workload.client_memory_bytes as u128,
        journal_bytes: 2 * workload.journal_size_bytes as u128,
        queued_bytes: MEMORY_PER_QUEUED_MESSAGE_BYTES * workload.queued_messages as u128,
        total_bytes: 0,
    };
    let terms = [
        estimate.base_bytes,
        estimate.sow_bytes,
        estimate.clients_bytes,
        estimate.client_messages_bytes,
        estimate.journal_bytes,
        estimate.queued_bytes,
    ];
    MemoryEstimate {
        total_bytes: terms
            .iter()
            .fold(0u128, |sum, term| sum.saturating_add(*term)),
        ..estimate
    }
}

/// SOW storage estimate.
pub fn sow_storage(workload: &Workload) -> SowStorageEstimate {
    let size = workload.message_size_bytes as u128;
    let slab = workload.slab_size_bytes as u128;
    let messages = workload.sow_messages as u128;
    SowStorageEstimate {
        min_bytes: (size * messages).saturating_add(workload.cores as u128 * slab),
        max_bytes: (size + slab).saturating_mul(messages),
        message_max_bytes: workload
            .slab_size_bytes
            .saturating_sub(SOW_RECORD_HEADER_BYTES)
            .max(SOW_MESSAGE_MAX_FLOOR_BYTES),
    }
}

/// Transaction log estimate: `(S + 512)·N`.
pub fn transaction_log_bytes(workload: &Workload) -> u128 {
    (workload.message_size_bytes as u128 + JOURNAL_OVERHEAD_PER_MESSAGE_BYTES)
        .saturating_mul(workload.retained_messages as u128)
}

/// Network estimate.
pub fn network(workload: &Workload) -> NetworkEstimate {
    let size = workload.message_size_bytes as f64;
    let publish = workload.publish_rate_per_second * size;
    let delivery = publish * workload.match_ratio * workload.subscriptions as f64;
    let query = workload.query_records as f64 * size * workload.query_rate_per_second;
    NetworkEstimate {
        publish_bytes_per_second: publish,
        delivery_bytes_per_second: delivery,
        query_bytes_per_second: query,
        total_bytes_per_second: publish + delivery + query,
    }
}

/// Every estimate.
pub fn estimate(workload: &Workload) -> Estimates {
    Estimates {
        memory: memory(workload),
        sow_storage: sow_storage(workload),
        transaction_log_bytes: transaction_log_bytes(workload),
        network: network(workload),
    }
}

/// The figure to provision: `value × headroom_percent / 100`, rounded up.
pub fn provisioned(value: u128, headroom_percent: u32) -> u128 {
    value.saturating_mul(headroom_percent as u128).div_ceil(100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::units::{
        format_bits_per_second, format_bytes_decimal, format_bytes_per_second,
    };

    fn zero() -> Workload {
        Workload {
            message_size_bytes: 0,
            sow_messages: 0,
            clients: 0,
            client_memory_bytes: 0,
            journal_size_bytes: 0,
            queued_messages: 0,
            cores: 0,
            slab_size_bytes: 1 << 20,
            retained_messages: 0,
            publish_rate_per_second: 0.0,
            match_ratio: 0.0,
            subscriptions: 0,
            query_records: 0,
            query_rate_per_second: 0.0,
        }
    }

    fn memory_example(message_size_bytes: u64) -> MemoryEstimate {
        memory(&Workload {
            message_size_bytes,
            sow_messages: 20_000_000,
            clients: 200,
            client_memory_bytes: 10_000_000_000, // 10 GB
            journal_size_bytes: 1_000_000_000,   // 1 GB
            queued_messages: 1_000_000,
            ..zero()
        })
    }

    // Worked example 1: 20M SOW messages, 200 clients, 10 GB client memory, 1 GB journal, 1M queued
    // messages, "about 53 GB". Units: GB = 10^9 bytes for client memory, journal and the output;
    // the base is 1 GiB = 2^30 as the formula states.
    //   With S = 1 KB = 1000 B:  2^30 + 2*1000*20e6 + 200*4096 + 10e9 + 2*1e9 + 196*1e6
    //                          = 1_073_741_824 + 40_000_000_000 + 819_200 + 10_000_000_000
    //                            + 2_000_000_000 + 196_000_000 = 53_270_561_024 B = 53.27 GB.
    //   With S = 1 KiB = 1024 B the SOW term is 40_960_000_000 and the total 54_230_561_024 B
    //   = 54.23 GB = 50.51 GiB. So "about 53 GB" is the 1000-byte reading; in GiB neither reading
    //   gives 53 (49.61 and 50.51 GiB).
    #[test]
    fn memory_worked_example() {
        let kb = memory_example(1000);
        assert_eq!(kb.base_bytes, 1_073_741_824);
        assert_eq!(kb.sow_bytes, 40_000_000_000);
        assert_eq!(kb.clients_bytes, 819_200);
        assert_eq!(kb.client_messages_bytes, 10_000_000_000);
        assert_eq!(kb.journal_bytes, 2_000_000_000);
        assert_eq!(kb.queued_bytes, 196_000_000);
        assert_eq!(kb.total_bytes, 53_270_561_024);
        assert_eq!(format_bytes_decimal(kb.total_bytes), "53.27 GB");

        let kib = memory_example(1024);
        assert_eq!(kib.sow_bytes, 40_960_000_000);
        assert_eq!(kib.total_bytes, 54_230_561_024);
        assert_eq!(format_bytes_decimal(kib.total_bytes), "54.23 GB");
    }

    // Worked example 2: 5000 msg/s of 600 B, 2% match ratio, 100 subscriptions, 5 queries per minute
    // (one every 12 s) of 1000 records. Units: MB = 10^6 bytes, Mb = 10^6 bits.
    //   R*S*(1 + Mr*Ns) = 5000*600*(1 + 0.02*100) = 3_000_000 * 3 = 9_000_000 B/s
    //   Mq*S*Qs         = 1000*600*(5/60)        =                     50_000 B/s
    //   total 9_050_000 B/s = 9.05 MB/s (about 9 MB/s) = 72.4 Mb/s (about 72 Mb/s).
    #[test]
    fn network_worked_example() {
        let estimate = network(&Workload {
            message_size_bytes: 600,
            publish_rate_per_second: 5000.0,
            match_ratio: 0.02,
            subscriptions: 100,
            query_records: 1000,
            query_rate_per_second: 5.0 / 60.0,
            ..zero()
        });
        assert_eq!(estimate.publish_bytes_per_second, 3_000_000.0);
        assert!((estimate.delivery_bytes_per_second - 6_000_000.0).abs() < 1e-6);
        assert!((estimate.query_bytes_per_second - 50_000.0).abs() < 1e-6);
        assert!((estimate.total_bytes_per_second - 9_050_000.0).abs() < 1e-6);
        assert_eq!(
            format_bytes_per_second(estimate.total_bytes_per_second),
            "9.05 MB/s"
        );
        assert_eq!(
            format_bits_per_second(estimate.total_bytes_per_second),
            "72.40 Mb/s"
        );
    }

    #[test]
    fn sow_storage_bounds_and_message_max() {
        let workload = Workload {
            message_size_bytes: 1000,
            sow_messages: 1000,
            cores: 4,
            slab_size_bytes: 4 << 20,
            ..zero()
        };
        let estimate = sow_storage(&workload);
        assert_eq!(estimate.min_bytes, 1000 * 1000 + 4 * (4 << 20));
        assert_eq!(estimate.max_bytes, (1000 + (4 << 20)) * 1000);
        assert_eq!(estimate.message_max_bytes, (4 << 20) - 64);
        // A small slab never caps messages below 1 MiB.
        let small = sow_storage(&Workload {
            slab_size_bytes: 64 << 10,
            ..workload
        });
        assert_eq!(small.message_max_bytes, 1 << 20);
    }

    #[test]
    fn transaction_log_adds_512_bytes_per_message() {
        assert_eq!(
            transaction_log_bytes(&Workload {
                message_size_bytes: 600,
                retained_messages: 1_000_000,
                ..zero()
            }),
            1_112_000_000
        );
    }

    #[test]
    fn empty_workload_is_just_the_base() {
        let estimates = estimate(&zero());
        assert_eq!(estimates.memory.total_bytes, MEMORY_BASE_BYTES);
        assert_eq!(estimates.network.total_bytes_per_second, 0.0);
        assert_eq!(estimates.transaction_log_bytes, 0);
    }

    #[test]
    fn headroom_multiplies_and_rounds_up() {
        assert_eq!(provisioned(100, 200), 200);
        assert_eq!(provisioned(101, 150), 152);
        assert_eq!(provisioned(7, 100), 7);
    }

    #[test]
    fn huge_inputs_saturate_instead_of_wrapping() {
        let workload = Workload {
            message_size_bytes: u64::MAX,
            sow_messages: u64::MAX,
            slab_size_bytes: u64::MAX,
            cores: u64::MAX,
            retained_messages: u64::MAX,
            ..zero()
        };
        let estimates = estimate(&workload);
        assert_eq!(estimates.memory.sow_bytes, u128::MAX);
        assert_eq!(estimates.memory.total_bytes, u128::MAX);
        assert_eq!(estimates.sow_storage.max_bytes, u128::MAX);
        assert_eq!(estimates.transaction_log_bytes, u128::MAX);
        assert!(estimates.sow_storage.min_bytes > u64::MAX as u128);
        assert_eq!(provisioned(u128::MAX, 200), u128::MAX.div_ceil(100));
    }
}
