//! The small runtime seam: how a shard's executor is built.

use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement, PoolPlacement};
use sluice_tuning::limits;

/// An executor builder with the I/O memory, ring depth and blocking-thread
/// pool the log expects. `io_memory_bytes` must fit the locked-memory limit
/// (see `sluice_tuning::host::io_memory_per_executor`). An executor with
/// no work polls for `idle_poll` before it sleeps in the kernel.
pub fn executor_builder(
    placement: Placement,
    io_memory_bytes: usize,
    idle_poll: Duration,
) -> LocalExecutorBuilder {
    LocalExecutorBuilder::new(placement)
        .io_memory(io_memory_bytes)
        .ring_depth(limits::IO_RING_DEPTH)
        .spin_before_park(idle_poll)
        .blocking_thread_pool_placement(PoolPlacement::Unbound(limits::BLOCKING_THREADS))
}

pub use crate::file::{read_paths, ReadPaths};
