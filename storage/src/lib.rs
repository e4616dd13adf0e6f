//! The sluice partition log.
//!
//! A partition is a directory of segments named by base offset. Each
//! `<base>.log` holds Kafka RecordBatch v2 bytes exactly as producers sent
//! them, with the broker-assigned base offset, leader epoch and (for
//! LogAppendTime topics) timestamps written into the header. Segment files
//! are written and read with O_DIRECT through glommio's DMA files; appends go
//! into an aligned in-memory tail written in large aligned writes, and a
//! per-shard cache of recent batches stands in for the page cache.
//!
//! Architecture invariant: this crate knows nothing of sockets or of Kafka
//! requests; it speaks in record batches, offsets and timestamps.

pub mod batch;
pub mod cache;
pub mod config;
pub mod dma_memory;
pub mod epochs;
pub mod error;
pub mod faults;
mod file;
pub mod histogram;
mod index;
pub mod iotune;
mod kernel_ring;
mod log;
pub mod notify;
mod probe;
mod region;
pub mod runtime;
mod segment;
pub mod shard_heap;
pub mod stall;

pub use batch::{Batch, BatchHeader};
pub use cache::{CacheStats, ShardCache};
pub use config::{Clock, LogConfig, ManualClock, SystemClock, TimestampType};
pub use error::{kafka_code, Result, StorageError};
pub use log::{
    AppendInfo, OpenReport, PartitionLog, RetentionOutcome, SegmentInfo, CLEAN_SHUTDOWN_FILE,
};
pub use probe::LogStats;
pub use segment::RecoveryReport;
