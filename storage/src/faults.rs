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

/// Power cuts, for crash-consistency tests.
///
/// While armed (on this thread), every file the log opens, writes,
/// truncates, syncs and removes is journaled: the content its last
/// completed fdatasync covered, the pages written since, and whether its
/// directory entry was synced since it was created. [`power_cut`] then
/// rewrites every journaled file as a machine that lost power could leave
/// it: what an fdatasync covered is kept; every page written since is
/// independently kept, dropped (its old content, or nothing past the old
/// end) or torn (a prefix of its 512-byte sectors new, the rest old); a
/// changed length is kept or not; and a file whose creation no directory
/// sync covered may vanish. Removals are taken as durable at once (a
/// removed segment never comes back).
///
/// The journal reads whole files on the calling thread at each sync: a
/// test-only cost, never armed in a broker.
pub mod power {
    use std::cell::RefCell;
    use std::collections::{BTreeSet, HashMap};
    use std::path::{Path, PathBuf};

    const PAGE: u64 = 4096;
    const SECTOR: usize = 512;

    #[derive(Default)]
    struct Shadow {
        /// The content the last completed fdatasync covered.
        durable: Vec<u8>,
        /// Pages written or cut since then.
        dirty: BTreeSet<u64>,
        /// Created, and no directory sync since.
        entry_unsynced: bool,
    }

    thread_local! {
        static JOURNAL: RefCell<Option<HashMap<PathBuf, Shadow>>> = const { RefCell::new(None) };
    }

    /// Starts journaling this thread's file operations (clears any journal).
    pub fn arm() {
        JOURNAL.with(|j| *j.borrow_mut() = Some(HashMap::new()));
    }

    /// Stops journaling.
    pub fn disarm() {
        JOURNAL.with(|j| *j.borrow_mut() = None);
    }

    fn with(f: impl FnOnce(&mut HashMap<PathBuf, Shadow>)) {
        JOURNAL.with(|j| {
            if let Some(m) = j.borrow_mut().as_mut() {
                f(m)
            }
        })
    }

    /// Before an open: a file not journaled yet starts with what it holds
    /// (everything before arming counts as durable), or as a new entry.
    pub(crate) fn on_open(path: &Path) {
        with(|m| {
            if m.contains_key(path) {
                return;
            }
            let shadow = match std::fs::read(path) {
                Ok(durable) => Shadow {
                    durable,
                    ..Default::default()
                },
                Err(_) => Shadow {
                    entry_unsynced: true,
                    ..Default::default()
                },
            };
            m.insert(path.to_path_buf(), shadow);
        })
    }

    pub(crate) fn on_write(path: &Path, pos: u64, len: usize) {
        with(|m| {
            if let Some(s) = m.get_mut(path) {
                let end = pos + len as u64;
                s.dirty.extend(pos / PAGE..end.div_ceil(PAGE));
            }
        })
    }

    pub(crate) fn on_truncate(path: &Path, len: u64) {
        with(|m| {
            if let Some(s) = m.get_mut(path) {
                let old = s.durable.len() as u64;
                let (lo, hi) = (len.min(old), len.max(old));
                s.dirty
                    .extend(lo / PAGE..hi.div_ceil(PAGE).max(lo / PAGE + 1));
            }
        })
    }

    pub(crate) fn on_sync(path: &Path) {
        with(|m| {
            if let Some(s) = m.get_mut(path) {
                s.durable = std::fs::read(path).unwrap_or_default();
                s.dirty.clear();
            }
        })
    }

    pub(crate) fn on_sync_dir(dir: &Path) {
        with(|m| {
            for (p, s) in m.iter_mut() {
                if p.parent() == Some(dir) {
                    s.entry_unsynced = false;
                }
            }
        })
    }

    pub(crate) fn on_remove(path: &Path) {
        with(|m| {
            m.remove(path);
        })
    }

    /// What one power cut did, for a test's message.
    #[derive(Debug, Default, Clone, Copy)]
    pub struct Cut {
        pub files: usize,
        pub pages_kept: usize,
        pub pages_dropped: usize,
        pub pages_torn: usize,
        pub files_vanished: usize,
    }

    /// Rewrites every journaled file as a power cut could leave it, chosen
    /// by `seed`; the journal then starts again from what is on disk. Call
    /// with no file of the log open.
    pub fn power_cut(seed: u64) -> Cut {
        let mut rng = seed;
        let mut next = move || {
            rng = rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let mut cut = Cut::default();
        let taken = JOURNAL.with(|j| j.borrow_mut().as_mut().map(std::mem::take));
        let Some(files) = taken else {
            return cut;
        };
        let mut paths: Vec<&PathBuf> = files.keys().collect();
        paths.sort();
        for path in paths {
            let s = &files[path];
            cut.files += 1;
            if s.entry_unsynced && next() % 2 == 0 {
                let _ = std::fs::remove_file(path);
                cut.files_vanished += 1;
                continue;
            }
            let Ok(now) = std::fs::read(path) else {
                continue;
            };
            if s.dirty.is_empty() && now == s.durable {
                continue;
            }
            let old = &s.durable;
            let mut len = if next() % 2 == 0 {
                now.len()
            } else {
                old.len()
            };
            let mut out = old.clone();
            let mut kept_end = 0usize;
            for &page in &s.dirty {
                let at = (page * PAGE) as usize;
                let new_page = now.get(at..(at + PAGE as usize).min(now.len()));
                match (next() % 3, new_page) {
                    (0, Some(p)) if !p.is_empty() => {
                        put(&mut out, at, p);
                        kept_end = kept_end.max(at + p.len());
                        cut.pages_kept += 1;
                    }
                    (1, Some(p)) if !p.is_empty() => {
                        let sectors = p.len().div_ceil(SECTOR);
                        let keep = (next() as usize % sectors.max(1)) * SECTOR;
                        let keep = keep.min(p.len());
                        put(&mut out, at, &p[..keep]);
                        kept_end = kept_end.max(at + keep);
                        cut.pages_torn += 1;
                    }
                    _ => cut.pages_dropped += 1,
                }
            }
            // A length past the old end holds only what was kept of it.
            if len > old.len() {
                len = len.min(kept_end.max(old.len()));
            }
            out.resize(len, 0);
            let _ = std::fs::write(path, &out);
        }
        // Journal what is there now, as durable: the cut is over.
        arm();
        cut
    }

    fn put(out: &mut Vec<u8>, at: usize, bytes: &[u8]) {
        if out.len() < at + bytes.len() {
            out.resize(at + bytes.len(), 0);
        }
        out[at..at + bytes.len()].copy_from_slice(bytes);
    }
}
