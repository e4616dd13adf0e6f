//! Per-log configuration (the Kafka topic configs the log honours, plus the
//! engine's own sizes) and the clock the log reads.

use std::cell::Cell;

use sluice_tuning::limits;

use crate::error::{Result, StorageError};

/// Kafka's `message.timestamp.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampType {
    #[default]
    CreateTime,
    LogAppendTime,
}

/// Configuration of one partition log. Built with defaults that work out of
/// the box; topic configs override the Kafka-named fields.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `segment.bytes`: roll before a segment would exceed this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll a segment this old (since its first append).
    pub segment_ms: i64,
    /// `retention.ms`: delete segments whose newest timestamp is older; -1 = never.
    pub retention_ms: i64,
    /// `retention.bytes`: delete oldest segments while the log is larger; -1 = no limit.
    pub retention_bytes: i64,
    /// `max.message.bytes`: largest batch accepted.
    pub batch_bytes_max: usize,
    /// `index.interval.bytes`: log bytes between sparse index entries.
    pub index_interval_bytes: u32,
    /// `message.timestamp.type`.
    pub timestamp_type: TimestampType,
    /// Flush policy: sync once this many bytes are unsynced.
    pub flush_interval_bytes: u64,
    /// Flush policy: sync appends this old that nobody waited on.
    pub flush_interval_ms: u64,
    /// The aligned in-memory tail appends go into.
    pub tail_buffer_bytes: usize,
    /// Tail buffers in flight to the disk before appends wait.
    pub write_behind: usize,
    /// One DMA read.
    pub read_chunk_bytes: usize,
    /// Bytes a cold read fetches at once, as concurrent chunks.
    pub read_ahead_bytes: usize,
    /// Whether read-ahead (a sequential reader catching up) reads on the
    /// executor's blocking pool, straight into buffers the batches are then
    /// served from, instead of through io_uring into the runtime's buffers,
    /// which the shard must copy out (glommio's read buffers cannot leave
    /// the shard's thread, and a cached batch may).
    pub read_ahead_on_pool: bool,
}

/// What the disk's measured io-properties set for every log (once, at
/// start-up): the write size and depth, and how long an append nobody
/// waits on may stay unsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceDefaults {
    pub tail_buffer_bytes: usize,
    pub write_behind: usize,
    pub flush_interval_ms: u64,
}

static DEVICE_DEFAULTS: std::sync::OnceLock<DeviceDefaults> = std::sync::OnceLock::new();

/// Makes `d` the defaults of every `LogConfig` from now on. Returns false
/// when they were set before, or are out of their limits.
pub fn set_device_defaults(d: DeviceDefaults) -> bool {
    let ok = (limits::TAIL_BUFFER_BYTES_MIN..=limits::TAIL_BUFFER_BYTES_MAX)
        .contains(&d.tail_buffer_bytes)
        && d.tail_buffer_bytes
            .is_multiple_of(limits::DIRECT_IO_ALIGN_BYTES)
        && (1..=limits::WRITE_BEHIND_MAX).contains(&d.write_behind)
        && (1..=limits::FLUSH_INTERVAL_MS_DEFAULT).contains(&d.flush_interval_ms);
    ok && DEVICE_DEFAULTS.set(d).is_ok()
}

impl Default for LogConfig {
    fn default() -> Self {
        let DeviceDefaults {
            tail_buffer_bytes,
            write_behind,
            flush_interval_ms,
        } = DEVICE_DEFAULTS.get().copied().unwrap_or(DeviceDefaults {
            tail_buffer_bytes: limits::TAIL_BUFFER_BYTES_DEFAULT,
            write_behind: limits::WRITE_BEHIND_DEFAULT,
            flush_interval_ms: limits::FLUSH_INTERVAL_MS_DEFAULT,
        });
        LogConfig {
            segment_bytes: limits::SEGMENT_BYTES_DEFAULT,
            segment_ms: limits::SEGMENT_MS_DEFAULT,
            retention_ms: limits::RETENTION_MS_DEFAULT,
            retention_bytes: limits::RETENTION_BYTES_DEFAULT,
            batch_bytes_max: limits::BATCH_BYTES_DEFAULT,
            index_interval_bytes: limits::INDEX_INTERVAL_BYTES_DEFAULT,
            timestamp_type: TimestampType::CreateTime,
            flush_interval_bytes: limits::FLUSH_INTERVAL_BYTES_DEFAULT,
            flush_interval_ms,
            tail_buffer_bytes,
            write_behind,
            read_chunk_bytes: limits::READ_CHUNK_BYTES_DEFAULT,
            read_ahead_bytes: limits::READ_AHEAD_BYTES_DEFAULT,
            read_ahead_on_pool: true,
        }
    }
}

impl LogConfig {
    /// Checks every value against its limit.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(StorageError::InvalidConfig(m));
        let align = limits::DIRECT_IO_ALIGN_BYTES;
        if !(limits::SEGMENT_BYTES_MIN..=limits::SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return bad(format!("segment.bytes {}", self.segment_bytes));
        }
        if self.segment_ms <= 0 {
            return bad(format!("segment.ms {}", self.segment_ms));
        }
        if self.retention_ms < -1 || self.retention_bytes < -1 {
            return bad("retention below -1".into());
        }
        if self.batch_bytes_max == 0 || self.batch_bytes_max > limits::BATCH_BYTES_MAX {
            return bad(format!("max.message.bytes {}", self.batch_bytes_max));
        }
        if self.index_interval_bytes == 0 {
            return bad("index.interval.bytes 0".into());
        }
        if !(limits::TAIL_BUFFER_BYTES_MIN..=limits::TAIL_BUFFER_BYTES_MAX)
            .contains(&self.tail_buffer_bytes)
            || !self.tail_buffer_bytes.is_multiple_of(align)
        {
            return bad(format!("tail buffer {} bytes", self.tail_buffer_bytes));
        }
        if !(1..=limits::WRITE_BEHIND_MAX).contains(&self.write_behind) {
            return bad(format!("write behind {}", self.write_behind));
        }
        if self.read_chunk_bytes == 0
            || !self.read_chunk_bytes.is_multiple_of(align)
            || self.read_ahead_bytes > limits::READ_AHEAD_BYTES_MAX
        {
            return bad("read chunk / read ahead sizes".into());
        }
        Ok(())
    }

    /// The largest batch this log accepts: the topic's limit, never above the
    /// hard ceiling.
    pub fn batch_limit(&self) -> usize {
        self.batch_bytes_max.min(limits::BATCH_BYTES_MAX)
    }
}

/// Where the log reads the time: wall-clock in production, a manual clock in
/// tests so retention and segment age are deterministic.
pub trait Clock {
    fn now_ms(&self) -> i64;
}

/// The system's real-time clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock(Cell<i64>);

impl ManualClock {
    pub fn new(now_ms: i64) -> Self {
        ManualClock(Cell::new(now_ms))
    }
    pub fn set(&self, now_ms: i64) {
        self.0.set(now_ms)
    }
    pub fn advance(&self, ms: i64) {
        self.0.set(self.0.get() + ms)
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.get()
    }
}
