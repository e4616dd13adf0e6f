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
