//! Counters of one partition log, kept in one place.

use std::cell::Cell;

/// A snapshot of a log's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    pub appends: u64,
    pub appended_bytes: u64,
    /// fdatasync calls on segment data (group commits and rolls).
    pub syncs: u64,
    /// DMA writes issued for segment data.
    pub writes: u64,
    pub written_bytes: u64,
    /// Reads that went to disk because the cache did not hold the batch.
    pub disk_reads: u64,
    pub disk_read_bytes: u64,
    pub cache_reads: u64,
    /// Streamers started to read ahead of sequential readers.
    pub streams_started: u64,
    /// Bytes they read and cached.
    pub streamed_bytes: u64,
}

/// Sums logs' counters (a shard's partitions, for its metrics).
impl std::ops::AddAssign for LogStats {
    fn add_assign(&mut self, o: LogStats) {
        self.appends += o.appends;
        self.appended_bytes += o.appended_bytes;
        self.syncs += o.syncs;
        self.writes += o.writes;
        self.written_bytes += o.written_bytes;
        self.disk_reads += o.disk_reads;
        self.disk_read_bytes += o.disk_read_bytes;
        self.cache_reads += o.cache_reads;
        self.streams_started += o.streams_started;
        self.streamed_bytes += o.streamed_bytes;
    }
}

#[derive(Default)]
pub(crate) struct LogProbe(Cell<LogStats>);

impl LogProbe {
    pub fn update(&self, f: impl FnOnce(&mut LogStats)) {
        let mut s = self.0.get();
        f(&mut s);
        self.0.set(s);
    }
    pub fn get(&self) -> LogStats {
        self.0.get()
    }
}
