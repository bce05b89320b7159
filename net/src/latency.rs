//! Latency histograms the data plane records into and the admin API reads: fixed power-of-two
//! buckets of relaxed atomics, so recording is a few loads and stores, never a lock or an
//! allocation, and the exported metric has a fixed, small number of series.
//!
//! Bucket `i` counts values in `(2^(i-1), 2^i]` microseconds (bucket 0: up to 1 µs); the last
//! bucket counts everything above [`LATENCY_BUCKET_BOUNDS_US`]'s last bound. Each histogram has
//! one writer (the shard that owns it), so recording uses load + store instead of locked
//! read-modify-write instructions; readers may see a bucket and the count from slightly different
//! moments, which monitoring tolerates.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The wall clock in nanoseconds since the Unix epoch (0 if the clock is before it): the clock
/// of every message's receive time, so route latency is measured against the same one.
pub fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64)
}

/// Buckets with a finite upper bound: 1 µs, 2 µs, 4 µs … 2^21 µs (about 2.1 s).
pub const LATENCY_FINITE_BUCKETS: usize = 22;

/// The finite buckets' upper bounds, in microseconds.
pub const LATENCY_BUCKET_BOUNDS_US: [u64; LATENCY_FINITE_BUCKETS] = {
    let mut bounds = [0u64; LATENCY_FINITE_BUCKETS];
    let mut index = 0;
    while index < LATENCY_FINITE_BUCKETS {
        bounds[index] = 1 << index;
        index += 1;
    }
    bounds
};

/// One histogram: finite buckets, the overflow bucket, the sum and the count.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_FINITE_BUCKETS + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

/// A histogram read at one moment (or several added together).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencyCounts {
    /// Per bucket, not cumulative; the last entry is the overflow bucket.
    pub buckets: [u64; LATENCY_FINITE_BUCKETS + 1],
    /// Sum of every recorded value, in nanoseconds.
    pub sum_ns: u64,
    /// Values recorded.
    pub count: u64,
}

/// The bucket a value falls in.
fn bucket_of(nanos: u64) -> usize {
    let micros = nanos.div_ceil(1000);
    if micros <= 1 {
        return 0;
    }
    let index = (64 - (micros - 1).leading_zeros()) as usize;
    index.min(LATENCY_FINITE_BUCKETS)
}

impl LatencyHistogram {
    /// Records one value. Only the histogram's owner may call this (single writer).
    pub fn record(&self, latency: Duration) {
        self.record_ns(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Records one value given in nanoseconds (single writer).
    pub fn record_ns(&self, nanos: u64) {
        bump(&self.buckets[bucket_of(nanos)], 1);
        bump(&self.sum_ns, nanos);
        bump(&self.count, 1);
    }

    /// Reads every bucket.
    pub fn read(&self) -> LatencyCounts {
        let mut counts = LatencyCounts {
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
            count: self.count.load(Ordering::Relaxed),
            ..LatencyCounts::default()
        };
        for (count, bucket) in counts.buckets.iter_mut().zip(&self.buckets) {
            *count = bucket.load(Ordering::Relaxed);
        }
        counts
    }
}

/// Adds without a locked instruction: the owner is the only writer.
fn bump(counter: &AtomicU64, amount: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(amount),
        Ordering::Relaxed,
    );
}

impl LatencyCounts {
    /// Adds another reading (e.g. another shard's) into this one.
    pub fn add(&mut self, other: &LatencyCounts) {
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine = mine.saturating_add(*theirs);
        }
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        self.count = self.count.saturating_add(other.count);
    }

    /// The upper bound (µs) of the bucket holding the `quantile` (0..=1) value: an upper
    /// estimate within a factor of two. `None` when nothing was recorded; `u64::MAX` when the
    /// value is in the overflow bucket.
    pub fn quantile_upper_bound_us(&self, quantile: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let total: u64 = self.buckets.iter().sum();
        let rank = ((quantile.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(
                    LATENCY_BUCKET_BOUNDS_US
                        .get(index)
                        .copied()
                        .unwrap_or(u64::MAX),
                );
            }
        }
        Some(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_power_of_two_buckets() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1000), 0);
        assert_eq!(bucket_of(1001), 1);
        assert_eq!(bucket_of(2000), 1);
        assert_eq!(bucket_of(2001), 2);
        assert_eq!(bucket_of(100_000), 7); // 100 µs is in (64, 128]
        assert_eq!(bucket_of(u64::MAX), LATENCY_FINITE_BUCKETS);
        for (index, bound) in LATENCY_BUCKET_BOUNDS_US.iter().enumerate() {
            assert_eq!(bucket_of(bound * 1000), index, "bound {bound} µs");
            assert_eq!(
                bucket_of(bound * 1000 + 1),
                index + 1,
                "just over {bound} µs"
            );
        }
    }

    #[test]
    fn reading_and_quantiles() {
        let histogram = LatencyHistogram::default();
        assert_eq!(histogram.read().quantile_upper_bound_us(0.5), None);
        for _ in 0..90 {
            histogram.record(Duration::from_micros(10));
        }
        for _ in 0..10 {
            histogram.record(Duration::from_millis(3));
        }
        histogram.record(Duration::from_secs(10));
        let counts = histogram.read();
        assert_eq!(counts.count, 101);
        assert_eq!(counts.buckets.iter().sum::<u64>(), 101);
        assert_eq!(counts.sum_ns, 90 * 10_000 + 10 * 3_000_000 + 10_000_000_000);
        assert_eq!(counts.quantile_upper_bound_us(0.5), Some(16));
        assert_eq!(counts.quantile_upper_bound_us(0.95), Some(4096));
        assert_eq!(counts.quantile_upper_bound_us(1.0), Some(u64::MAX));
        let mut doubled = counts;
        doubled.add(&counts);
        assert_eq!(doubled.count, 202);
        assert_eq!(doubled.quantile_upper_bound_us(0.5), Some(16));
    }
}
