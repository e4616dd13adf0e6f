//! Fault hooks of the storage crate, all in one place.
//!
//! Each hook is a per-thread counter that tests set to make the next N
//! operations of a kind fail as the device would. They cost one
//! thread-local read per operation and do nothing unless armed.

use std::cell::Cell;
use std::io;

thread_local! {
    static FAIL_SYNCS: Cell<u32> = const { Cell::new(0) };
    static FAIL_WRITES: Cell<u32> = const { Cell::new(0) };
}

/// Makes the next `n` fdatasync calls on this thread fail with EIO.
pub fn fail_next_syncs(n: u32) {
    FAIL_SYNCS.with(|c| c.set(n));
}

/// Makes the next `n` data writes on this thread fail with EIO.
pub fn fail_next_writes(n: u32) {
    FAIL_WRITES.with(|c| c.set(n));
}

fn take(c: &'static std::thread::LocalKey<Cell<u32>>, what: &str) -> io::Result<()> {
    c.with(|c| match c.get() {
        0 => Ok(()),
        n => {
            c.set(n - 1);
            Err(io::Error::other(format!("injected {what} failure (EIO)")))
        }
    })
}

pub(crate) fn sync_result() -> io::Result<()> {
    take(&FAIL_SYNCS, "fdatasync")
}

pub(crate) fn write_result() -> io::Result<()> {
    take(&FAIL_WRITES, "write")
}

thread_local! {
    static REFUSE_URING_READS: Cell<u32> = const { Cell::new(0) };
}

/// Makes the next `n` io_uring reads on this thread be refused as some
/// devices refuse them (EOPNOTSUPP), exercising the blocking-pool path.
/// The next read tries io_uring first, whatever happened before.
pub fn refuse_next_uring_reads(n: u32) {
    REFUSE_URING_READS.with(|c| c.set(n));
    crate::file::reset_read_backoff();
}

pub(crate) fn uring_read_refused() -> bool {
    REFUSE_URING_READS.with(|c| match c.get() {
        0 => false,
        n => {
            c.set(n - 1);
            true
        }
    })
}
