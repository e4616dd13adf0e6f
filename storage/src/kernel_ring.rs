//! An io_uring ring that iotune waits on in the kernel, as fio's io_uring
//! engine does: submit, then sleep (or, on a polled ring, poll) in
//! `io_uring_enter` until a completion is posted. What it times is the
//! device and io_uring's own hand-offs, without an executor's turn between
//! the completion and the code that reads the clock (glommio re-arms its
//! timers, two to three `io_uring_enter` calls, before it resumes a task).
//!
//! It blocks the calling thread: for measuring only, never on a shard.

use std::io;
use std::os::fd::RawFd;

use io_uring::{opcode, types, IoUring};

pub(crate) struct KernelRing {
    ring: IoUring,
    in_flight: usize,
}

impl KernelRing {
    /// A ring completed by interrupt (fdatasync cannot be polled).
    pub fn new(entries: u32) -> io::Result<KernelRing> {
        Ok(KernelRing {
            ring: IoUring::new(entries)?,
            in_flight: 0,
        })
    }

    /// A polled ring (IOPOLL), for O_DIRECT reads and writes: completions
    /// are polled for, as on glommio's ring for O_DIRECT file I/O and with
    /// fio's `--hipri`.
    pub fn polled(entries: u32) -> io::Result<KernelRing> {
        Ok(KernelRing {
            ring: IoUring::builder().setup_iopoll().build(entries)?,
            in_flight: 0,
        })
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Queues a write of `len` bytes at `ptr` to `pos`; `submit_and_wait`
    /// sends it. The caller keeps the memory alive and unchanged until the
    /// write's completion has been taken (or `drain` has run).
    ///
    /// # Safety
    /// `ptr..ptr + len` must stay valid until then, and `fd` open.
    pub unsafe fn push_write(
        &mut self,
        fd: RawFd,
        ptr: *const u8,
        len: u32,
        pos: u64,
        tag: u64,
    ) -> io::Result<()> {
        let op = opcode::Write::new(types::Fd(fd), ptr, len)
            .offset(pos)
            .build()
            .user_data(tag);
        // SAFETY: forwarded from this function's contract.
        unsafe { self.push(op) }
    }

    /// Queues an fdatasync of `fd`.
    pub fn push_fdatasync(&mut self, fd: RawFd, tag: u64) -> io::Result<()> {
        let op = opcode::Fsync::new(types::Fd(fd))
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .user_data(tag);
        // SAFETY: the entry refers to no memory, only to a descriptor the
        // caller keeps open until the completion has been taken.
        unsafe { self.push(op) }
    }

    unsafe fn push(&mut self, op: io_uring::squeue::Entry) -> io::Result<()> {
        // SAFETY: forwarded from the callers' contracts.
        unsafe { self.ring.submission().push(&op) }
            .map_err(|_| io::Error::other("the measuring ring is full"))?;
        self.in_flight += 1;
        Ok(())
    }

    /// Submits what is queued and waits in the kernel for one completion:
    /// its tag and result (bytes, or a negative errno as an error).
    pub fn submit_and_wait(&mut self) -> io::Result<(u64, io::Result<u32>)> {
        if self.in_flight == 0 {
            return Err(io::Error::other("nothing in flight to wait for"));
        }
        loop {
            // A polled ring can return before anything completed (the
            // kernel stops polling to reschedule): enter again.
            self.ring.submit_and_wait(1)?;
            if let Some(cqe) = self.ring.completion().next() {
                self.in_flight -= 1;
                let res = cqe.result();
                let r = if res < 0 {
                    Err(io::Error::from_raw_os_error(-res))
                } else {
                    Ok(res as u32)
                };
                return Ok((cqe.user_data(), r));
            }
        }
    }

    /// Waits for everything in flight, so no buffer is freed under the
    /// kernel; results are dropped (used on an error path).
    pub fn drain(&mut self) {
        while self.in_flight > 0 {
            if self.submit_and_wait().is_err() {
                break;
            }
        }
    }
}

impl Drop for KernelRing {
    fn drop(&mut self) {
        self.drain();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// Writes and an fdatasync through the ring land in the file, tags
    /// come back with their results, and an error comes back as one.
    #[test]
    fn writes_and_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.path().join("f"))
            .unwrap();
        let mut ring = KernelRing::new(4).unwrap();
        let a = vec![7u8; 4096];
        let b = vec![9u8; 4096];
        unsafe {
            ring.push_write(f.as_raw_fd(), a.as_ptr(), 4096, 0, 1)
                .unwrap();
            ring.push_write(f.as_raw_fd(), b.as_ptr(), 4096, 4096, 2)
                .unwrap();
        }
        let mut tags = Vec::new();
        while ring.in_flight() > 0 {
            let (tag, r) = ring.submit_and_wait().unwrap();
            assert_eq!(r.unwrap(), 4096);
            tags.push(tag);
        }
        tags.sort();
        assert_eq!(tags, [1, 2]);
        ring.push_fdatasync(f.as_raw_fd(), 3).unwrap();
        let (tag, r) = ring.submit_and_wait().unwrap();
        assert_eq!((tag, r.unwrap()), (3, 0));
        let got = std::fs::read(dir.path().join("f")).unwrap();
        assert_eq!(&got[..4096], &a[..]);
        assert_eq!(&got[4096..], &b[..]);
        // A descriptor that is not open: the errno, not a panic.
        ring.push_fdatasync(-1, 4).unwrap();
        let (tag, r) = ring.submit_and_wait().unwrap();
        assert_eq!(tag, 4);
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EBADF));
        assert!(ring.submit_and_wait().is_err(), "nothing in flight");
    }

    /// A polled ring refuses I/O it cannot poll (here a buffered file) with
    /// EOPNOTSUPP, the answer iotune's writes fall back on.
    #[test]
    fn polled_ring_refuses_buffered_io() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(dir.path().join("f")).unwrap();
        let mut ring = KernelRing::polled(2).unwrap();
        let a = vec![1u8; 4096];
        unsafe {
            ring.push_write(f.as_raw_fd(), a.as_ptr(), 4096, 0, 5)
                .unwrap()
        };
        let (tag, r) = ring.submit_and_wait().unwrap();
        assert_eq!(tag, 5);
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EOPNOTSUPP));
        assert_eq!(std::fs::metadata(dir.path().join("f")).unwrap().len(), 0);
    }
}
