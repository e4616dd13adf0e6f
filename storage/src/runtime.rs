//! The small runtime seam: how a shard's executor is built.

use glommio::{LocalExecutorBuilder, Placement, PoolPlacement};
use sluice_tuning::limits;

/// An executor builder with the I/O memory, ring depth and blocking-thread
/// pool the log expects. `io_memory_bytes` must fit the locked-memory limit
/// (see `sluice_tuning::host::io_memory_per_executor`).
pub fn executor_builder(placement: Placement, io_memory_bytes: usize) -> LocalExecutorBuilder {
    LocalExecutorBuilder::new(placement)
        .io_memory(io_memory_bytes)
        .ring_depth(limits::IO_RING_DEPTH)
        .blocking_thread_pool_placement(PoolPlacement::Unbound(limits::BLOCKING_THREADS))
}

pub use crate::file::{read_paths, ReadPaths};
