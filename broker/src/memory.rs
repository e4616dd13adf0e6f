//! A shard's budget for request bytes: what its connections have read and
//! not yet answered, and the room their receive buffers hold for bytes
//! about to arrive (Kafka's `queued.max.request.bytes`, Redpanda's request
//! memory semaphore).
//!
//! Unlike both, room is taken as bytes arrive, not when a length prefix
//! announces them: a connection grows its buffer by what the socket
//! delivers (at most doubling what it holds, or a whole frame no larger
//! than the frames it has already sent in full), so a prefix claiming
//! 100 MiB followed by silence costs one read's worth. When the budget is
//! spent, a connection that needs more waits (the shard reads no more
//! from it) until answers free memory; one that waits longer than
//! `REQUEST_MEMORY_WAIT_MS_MAX` is closed, which also ends any standoff
//! between connections each holding part of a large frame.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use sluice_tuning::limits::REQUEST_MEMORY_WAIT_MS_MAX;

use crate::shard::Notify;

pub struct RequestMemory {
    budget: usize,
    used: Cell<usize>,
    peak: Cell<usize>,
    /// Times a connection had to wait for memory.
    waits: Cell<u64>,
    freed: Rc<Notify>,
}

/// The budget was spent for longer than a connection may wait.
#[derive(Debug)]
pub struct MemoryTimedOut {
    pub wanted: usize,
    pub used: usize,
    pub budget: usize,
}

impl std::fmt::Display for MemoryTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "waited {REQUEST_MEMORY_WAIT_MS_MAX} ms for {} bytes of request memory ({} of {} in use)",
            self.wanted, self.used, self.budget
        )
    }
}

impl RequestMemory {
    pub fn new(budget: usize) -> RequestMemory {
        RequestMemory {
            budget,
            used: Cell::new(0),
            peak: Cell::new(0),
            waits: Cell::new(0),
            freed: Rc::new(Notify::default()),
        }
    }

    pub fn budget(&self) -> usize {
        self.budget
    }
    pub fn used(&self) -> usize {
        self.used.get()
    }
    pub fn peak(&self) -> usize {
        self.peak.get()
    }
    pub fn waits(&self) -> u64 {
        self.waits.get()
    }

    /// Takes `n` bytes if they fit now.
    pub fn try_take(&self, n: usize) -> bool {
        let used = self.used.get();
        if used.saturating_add(n) > self.budget {
            return false;
        }
        self.used.set(used + n);
        self.peak.set(self.peak.get().max(used + n));
        true
    }

    /// Takes `n` bytes, waiting while they do not fit, at most
    /// `REQUEST_MEMORY_WAIT_MS_MAX`.
    pub async fn take(&self, n: usize) -> Result<(), MemoryTimedOut> {
        if self.try_take(n) {
            return Ok(());
        }
        let waits = self.waits.get() + 1;
        self.waits.set(waits);
        if waits.is_power_of_two() {
            tracing::warn!(
                used = self.used.get(),
                budget = self.budget,
                wanted = n,
                waits,
                "request memory spent; reading paused until answers free it (--request-memory-bytes)"
            );
        }
        let deadline =
            std::time::Instant::now() + Duration::from_millis(REQUEST_MEMORY_WAIT_MS_MAX);
        loop {
            let seen = self.freed.generation();
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(MemoryTimedOut {
                    wanted: n,
                    used: self.used.get(),
                    budget: self.budget,
                });
            }
            let freed = self.freed.changed(seen);
            let timer = glommio::timer::sleep(left);
            futures_lite::future::or(freed, async {
                timer.await;
            })
            .await;
            if self.try_take(n) {
                return Ok(());
            }
        }
    }

    /// Gives back `n` bytes taken before.
    pub fn give(&self, n: usize) {
        if n == 0 {
            return;
        }
        debug_assert!(n <= self.used.get(), "gave back more than was taken");
        self.used.set(self.used.get().saturating_sub(n));
        self.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_take_waits_for_a_give() {
        crate::test_support::run(|| async {
            let m = Rc::new(RequestMemory::new(100));
            assert!(m.try_take(60));
            assert!(!m.try_take(41));
            let m2 = m.clone();
            let waiter = glommio::spawn_local(async move { m2.take(50).await.is_ok() });
            glommio::timer::sleep(Duration::from_millis(20)).await;
            assert_eq!(m.used(), 60, "the waiter took nothing while it did not fit");
            m.give(30);
            assert!(waiter.await);
            assert_eq!(m.used(), 80);
            assert_eq!(m.peak(), 80);
            assert_eq!(m.waits(), 1);
        });
    }
}
