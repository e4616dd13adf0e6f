//! The kernel threads that run a shard's io_uring work that cannot be
//! issued without blocking: writes that extend a file, and fdatasync.
//! io_uring starts them as threads of the process (named `iou-wrk-<tid>`)
//! with the affinity of the shard that submitted the work, so they share
//! that shard's CPU. A shard polls while it waits, so under the
//! scheduler's fair share a woken worker can wait a full time slice
//! (milliseconds) for the CPU before it issues the write or the sync an
//! acks=all producer is waiting for. Given the lowest real-time priority,
//! a worker preempts the polling shard at once; it only ever runs
//! briefly (it issues the I/O and sleeps), and the kernel's real-time
//! throttling bounds it anyway.
//!
//! Nothing tells a process that io_uring started a worker: [`Promoter`]
//! looks for new ones every `IO_WORKER_SCAN_MS` on a thread of its own
//! (never a shard thread: it reads /proc).

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use crate::limits;

/// Whether a thread's name (`comm`) is that of an io_uring worker.
pub fn is_io_worker(comm: &str) -> bool {
    comm.trim_end().starts_with("iou-wrk-")
}

/// The io_uring workers among the threads under `task_dir` (a process's
/// `/proc/<pid>/task`): their thread ids, ascending.
pub fn io_worker_threads(task_dir: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir(task_dir) else {
        return Vec::new();
    };
    let mut tids: Vec<i32> = entries
        .flatten()
        .filter_map(|e| {
            let tid: i32 = e.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            is_io_worker(&comm).then_some(tid)
        })
        .collect();
    tids.sort_unstable();
    tids
}

/// Gives thread `tid` SCHED_FIFO at `priority`.
pub fn set_fifo(tid: i32, priority: i32) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: sched_setscheduler reads the param we own; an unknown tid
    // is an error return (ESRCH), not undefined behaviour.
    if unsafe { libc::sched_setscheduler(tid, libc::SCHED_FIFO, &param) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether thread `tid` runs SCHED_FIFO.
pub fn is_fifo(tid: i32) -> bool {
    // SAFETY: sched_getscheduler only reads the thread's policy.
    unsafe { libc::sched_getscheduler(tid) == libc::SCHED_FIFO }
}

/// What one pass found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// Workers given SCHED_FIFO in this pass.
    pub promoted: usize,
    /// Set when the kernel refused (EPERM: no CAP_SYS_NICE, or a
    /// container without real-time scheduling).
    pub refused: Option<String>,
}

/// Promotes the io_uring workers of one process, each once.
pub struct Promoter {
    task_dir: std::path::PathBuf,
    done: HashSet<i32>,
}

impl Promoter {
    /// For this process.
    pub fn this_process() -> Promoter {
        Promoter::new(Path::new("/proc/self/task"))
    }

    pub fn new(task_dir: &Path) -> Promoter {
        Promoter {
            task_dir: task_dir.to_path_buf(),
            done: HashSet::new(),
        }
    }

    /// Gives every worker not seen before SCHED_FIFO at
    /// `IO_WORKER_FIFO_PRIORITY`; forgets workers that have exited.
    pub fn pass(&mut self) -> Pass {
        let live = io_worker_threads(&self.task_dir);
        self.done.retain(|t| live.contains(t));
        let mut pass = Pass::default();
        for tid in live {
            if self.done.contains(&tid) {
                continue;
            }
            match set_fifo(tid, limits::IO_WORKER_FIFO_PRIORITY) {
                Ok(()) => {
                    pass.promoted += 1;
                    self.done.insert(tid);
                }
                // Exited between the listing and now.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => {
                    pass.refused = Some(e.to_string());
                    return pass;
                }
            }
        }
        pass
    }

    /// Runs passes every `IO_WORKER_SCAN_MS` until `stop` receives (or its
    /// sender is gone); returns early, with the reason, when the kernel
    /// refuses. `first_promoted` runs once, when the first worker has been
    /// promoted.
    pub fn run(
        mut self,
        stop: &std::sync::mpsc::Receiver<()>,
        mut first_promoted: impl FnMut(),
    ) -> Option<String> {
        let mut promoted_any = false;
        loop {
            let p = self.pass();
            if p.refused.is_some() {
                return p.refused;
            }
            if p.promoted > 0 && !promoted_any {
                promoted_any = true;
                first_promoted();
            }
            match stop.recv_timeout(Duration::from_millis(limits::IO_WORKER_SCAN_MS)) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(dir: &Path, tid: i32, comm: &str) {
        let t = dir.join(tid.to_string());
        std::fs::create_dir_all(&t).unwrap();
        std::fs::write(t.join("comm"), format!("{comm}\n")).unwrap();
    }

    // Proves only threads named as io_uring workers are listed, by id in
    // ascending order, and entries that are not threads are skipped.
    #[test]
    fn lists_the_io_uring_workers_of_a_task_directory() {
        let d = tempfile::tempdir().unwrap();
        task(d.path(), 100, "sluice");
        task(d.path(), 131, "iou-wrk-102");
        task(d.path(), 102, "sluice-shard-0-");
        task(d.path(), 117, "iou-wrk-102");
        task(d.path(), 140, "iou-sqp-102");
        std::fs::create_dir_all(d.path().join("not-a-tid")).unwrap();
        assert_eq!(io_worker_threads(d.path()), vec![117, 131]);
        assert!(io_worker_threads(&d.path().join("missing")).is_empty());
        assert!(is_io_worker("iou-wrk-4002\n"));
        assert!(!is_io_worker("sluice-iou-wrk"));
    }

    // Proves a pass promotes each worker once and remembers only live
    // ones: workers are ids of this test's own threads, renamed; the
    // kernel's answer (promoted, or refused without the privilege)
    // matches what sched_setscheduler says directly.
    #[test]
    fn a_pass_promotes_new_workers_once() {
        let (tx, rx) = std::sync::mpsc::sync_channel::<i32>(1);
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel::<()>(1);
        let worker = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() }).unwrap();
            done_rx.recv().unwrap();
        });
        let tid = rx.recv().unwrap();
        let d = tempfile::tempdir().unwrap();
        task(d.path(), tid, "iou-wrk-1");
        let mut p = Promoter::new(d.path());
        let first = p.pass();
        if let Some(why) = &first.refused {
            assert_eq!(first.promoted, 0);
            assert!(!is_fifo(tid), "{why}");
        } else {
            assert_eq!(
                first,
                Pass {
                    promoted: 1,
                    refused: None
                }
            );
            assert!(is_fifo(tid));
            // Already done: not promoted again.
            assert_eq!(p.pass(), Pass::default());
            // Gone from the listing: forgotten, so a new thread with the
            // same id would be promoted.
            std::fs::remove_dir_all(d.path().join(tid.to_string())).unwrap();
            assert_eq!(p.pass(), Pass::default());
            assert!(p.done.is_empty());
        }
        done_tx.send(()).unwrap();
        worker.join().unwrap();
    }
}
