//! Histograms of this thread's (this shard's) storage work, for
//! `/metrics`: how long appends, segment writes and fdatasyncs take, and
//! how many appends each fdatasync made durable (the group commit's
//! size). Recording is a bucket search and three additions on the shard
//! thread; the broker reads them at scrape time.

use std::cell::RefCell;
use std::time::Duration;

/// Upper bounds of latency buckets, in microseconds (+Inf implied).
pub const LATENCY_BOUNDS_US: &[u64] = &[
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Upper bounds of count buckets (+Inf implied).
pub const COUNT_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096];

/// A count per bucket (not cumulative), the sum and the count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    pub bounds: &'static [u64],
    pub buckets: Vec<u64>,
    pub sum: u64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [u64]) -> Histogram {
        Histogram {
            bounds,
            buckets: vec![0; bounds.len() + 1],
            sum: 0,
            count: 0,
        }
    }

    /// A latency histogram (values in microseconds).
    pub fn latency() -> Histogram {
        Histogram::new(LATENCY_BOUNDS_US)
    }

    pub fn record_value(&mut self, v: u64) {
        let i = self.bounds.partition_point(|&b| b < v);
        self.buckets[i] += 1;
        self.sum = self.sum.saturating_add(v);
        self.count += 1;
    }

    pub fn record(&mut self, d: Duration) {
        self.record_value(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }
}

/// This shard's storage histograms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageHistograms {
    /// `PartitionLog::append` (validation, stamping, caching, the tail
    /// copy and any write it had to wait for).
    pub append_us: Histogram,
    /// One segment write, issue to completion.
    pub write_us: Histogram,
    /// One fdatasync of segment data.
    pub sync_us: Histogram,
    /// Appends each fdatasync made durable.
    pub commit_appends: Histogram,
}

impl Default for StorageHistograms {
    fn default() -> Self {
        StorageHistograms {
            append_us: Histogram::latency(),
            write_us: Histogram::latency(),
            sync_us: Histogram::latency(),
            commit_appends: Histogram::new(COUNT_BOUNDS),
        }
    }
}

thread_local! {
    static STORAGE: RefCell<StorageHistograms> = RefCell::new(StorageHistograms::default());
}

pub(crate) fn record(f: impl FnOnce(&mut StorageHistograms)) {
    STORAGE.with_borrow_mut(f);
}

/// This thread's histograms so far.
pub fn storage() -> StorageHistograms {
    STORAGE.with_borrow(|s| s.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_first_bucket_that_holds_them() {
        let mut h = Histogram::new(COUNT_BOUNDS);
        for v in [1, 2, 3, 5000] {
            h.record_value(v);
        }
        assert_eq!(h.buckets[0], 1);
        assert_eq!(h.buckets[1], 1);
        assert_eq!(h.buckets[2], 1, "3 is in the <= 4 bucket");
        assert_eq!(
            h.buckets[COUNT_BOUNDS.len()],
            1,
            "past the last bound: +Inf"
        );
        assert_eq!((h.sum, h.count), (5006, 4));
        let mut l = Histogram::latency();
        l.record(Duration::from_micros(50));
        l.record(Duration::from_micros(51));
        assert_eq!(&l.buckets[..2], &[1, 1]);
    }
}
