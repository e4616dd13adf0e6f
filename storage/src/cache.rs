//! The per-shard cache of recent batches.
//!
//! With O_DIRECT there is no page cache beneath the log, so the log keeps
//! its own: every appended batch, and every batch read from disk, is cached
//! until the shard's budget (`cache_bytes_max`) is spent, then the oldest
//! insertions go first. Batches not yet written to their file are pinned:
//! they are the only copy a reader can be served from.
//!
//! Batches read ahead for a sequential reader (a consumer catching up) are
//! read once: they leave the cache as soon as their reader has them, so a
//! catch-up neither pushes the recent batches other readers want out of the
//! cache nor grows the process by the size of what it reads (memory the
//! kernel must fault in and zero, page by page; freed and reused instead).
//!
//! One `ShardCache` is shared by all the logs of a shard (it is `!Send`, as
//! everything on a shard is). Each log holds a `LogCache` handle.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::rc::{Rc, Weak};

use crate::batch::Batch;

/// Counters a caller can read to see whether reads hit memory.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub inserted_bytes: u64,
    pub evicted_bytes: u64,
    /// Read-ahead batches dropped once their reader had them.
    pub read_once_bytes: u64,
    pub used_bytes: usize,
    pub entries: usize,
}

struct Ticket {
    log: u64,
    base: i64,
    id: u64,
}

/// The cache budget and eviction order of one shard.
pub struct ShardCache {
    budget_bytes: usize,
    used_bytes: Cell<usize>,
    entries: Cell<usize>,
    fifo: RefCell<VecDeque<Ticket>>,
    logs: RefCell<HashMap<u64, Weak<RefCell<Entries>>>>,
    next_id: Cell<u64>,
    stats: Cell<CacheStats>,
}

#[derive(Default)]
struct Entries {
    map: BTreeMap<i64, (u64, Batch)>,
    /// Batches at or above this offset are not yet written to disk.
    pinned_from: i64,
    /// Bases of the batches that leave once read.
    read_once: BTreeSet<i64>,
}

impl ShardCache {
    /// A cache that keeps at most `budget_bytes` of batches, except for
    /// batches pinned because they are not on disk yet.
    pub fn new(budget_bytes: usize) -> Rc<ShardCache> {
        Rc::new(ShardCache {
            budget_bytes,
            used_bytes: Cell::new(0),
            entries: Cell::new(0),
            fifo: RefCell::new(VecDeque::new()),
            logs: RefCell::new(HashMap::new()),
            next_id: Cell::new(1),
            stats: Cell::new(CacheStats::default()),
        })
    }

    pub fn budget_bytes(&self) -> usize {
        self.budget_bytes
    }

    pub fn stats(&self) -> CacheStats {
        let mut s = self.stats.get();
        s.used_bytes = self.used_bytes.get();
        s.entries = self.entries.get();
        s
    }

    fn bump(&self, f: impl FnOnce(&mut CacheStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    fn id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    /// A handle for one log.
    pub(crate) fn register(self: &Rc<Self>) -> LogCache {
        let entries = Rc::new(RefCell::new(Entries::default()));
        let id = self.id();
        self.logs.borrow_mut().insert(id, Rc::downgrade(&entries));
        LogCache {
            shard: self.clone(),
            id,
            entries,
        }
    }

    fn release(&self, bytes: usize, count: usize) {
        self.used_bytes.set(self.used_bytes.get() - bytes);
        self.entries.set(self.entries.get() - count);
    }

    /// Evicts the oldest unpinned insertions until the budget holds. Pinned
    /// batches go back in line; a full pass over the line ends the loop.
    fn evict(&self) {
        let mut budget_steps = self.fifo.borrow().len();
        while self.used_bytes.get() > self.budget_bytes && budget_steps > 0 {
            budget_steps -= 1;
            let Some(t) = self.fifo.borrow_mut().pop_front() else {
                break;
            };
            let Some(log) = self.logs.borrow().get(&t.log).and_then(Weak::upgrade) else {
                continue;
            };
            let mut e = log.borrow_mut();
            match e.map.get(&t.base) {
                Some((id, _)) if *id == t.id => {
                    if t.base >= e.pinned_from {
                        drop(e);
                        self.fifo.borrow_mut().push_back(t);
                        continue;
                    }
                    let (_, b) = e.map.remove(&t.base).unwrap();
                    e.read_once.remove(&t.base);
                    self.release(b.len(), 1);
                    self.bump(|s| s.evicted_bytes += b.len() as u64);
                }
                _ => {} // Already removed by truncation or retention.
            }
        }
        // Tickets of batches removed by truncation or retention stay in line
        // until popped; compact the line when they dominate it, so it stays
        // bounded by the live entries.
        let live = self.entries.get();
        if self.fifo.borrow().len() > 2 * live + 1024 {
            let logs = self.logs.borrow();
            self.fifo.borrow_mut().retain(|t| {
                logs.get(&t.log).and_then(Weak::upgrade).is_some_and(|l| {
                    l.borrow()
                        .map
                        .get(&t.base)
                        .is_some_and(|(id, _)| *id == t.id)
                })
            });
        }
    }
}

/// One log's view of the shard cache.
pub(crate) struct LogCache {
    shard: Rc<ShardCache>,
    id: u64,
    entries: Rc<RefCell<Entries>>,
}

impl LogCache {
    /// Caches a batch. A pinned batch stays until `unpin_below` passes it.
    pub(crate) fn insert(&self, batch: Batch) {
        self.insert_as(batch, false);
    }

    /// Caches a batch read ahead for one reader: it leaves once
    /// [`LogCache::drop_read_once`] says the reader has it.
    pub(crate) fn insert_read_once(&self, batch: Batch) {
        self.insert_as(batch, true);
    }

    fn insert_as(&self, batch: Batch, once: bool) {
        let id = self.shard.id();
        let base = batch.base_offset();
        let len = batch.len();
        {
            let mut e = self.entries.borrow_mut();
            if let Some((_, old)) = e.map.insert(base, (id, batch)) {
                self.shard.release(old.len(), 1);
            }
            if once {
                e.read_once.insert(base);
            } else {
                e.read_once.remove(&base);
            }
        }
        self.shard.used_bytes.set(self.shard.used_bytes.get() + len);
        self.shard.entries.set(self.shard.entries.get() + 1);
        self.shard.bump(|s| s.inserted_bytes += len as u64);
        self.shard.fifo.borrow_mut().push_back(Ticket {
            log: self.id,
            base,
            id,
        });
        self.shard.evict();
    }

    /// Batches below `offset` are on disk and may be evicted.
    pub(crate) fn unpin_below(&self, offset: i64) {
        let mut e = self.entries.borrow_mut();
        e.pinned_from = e.pinned_from.max(offset);
    }

    /// Sets the pin mark exactly (after truncation lowers the log end).
    pub(crate) fn set_pinned_from(&self, offset: i64) {
        self.entries.borrow_mut().pinned_from = offset;
    }

    /// The cached batches that start with the one holding `offset` and
    /// follow each other without a gap, up to `max_bytes` (the first batch
    /// is returned whole even when larger).
    pub(crate) fn chain(&self, offset: i64, max_bytes: usize) -> Vec<Batch> {
        let e = self.entries.borrow();
        let mut out = Vec::new();
        let mut total = 0usize;
        let start = match e.map.range(..=offset).next_back() {
            Some((_, (_, b))) if b.last_offset() >= offset => b.base_offset(),
            _ => {
                self.shard.bump(|s| s.misses += 1);
                return out;
            }
        };
        let mut expect = start;
        for (&base, (_, b)) in e.map.range(start..) {
            if base != expect || (!out.is_empty() && total + b.len() > max_bytes) {
                break;
            }
            total += b.len();
            expect = b.next_offset();
            out.push(b.clone());
        }
        self.shard.bump(|s| s.hits += 1);
        out
    }

    /// How far the cache runs without a gap from the batch holding `from`,
    /// looking no further than `limit_bytes`: (first offset past the run,
    /// bytes in it). (from, 0) when the batch holding `from` is not cached.
    pub(crate) fn extent(&self, from: i64, limit_bytes: usize) -> (i64, usize) {
        let e = self.entries.borrow();
        let (mut next, mut bytes) = match e.map.range(..=from).next_back() {
            Some((_, (_, b))) if b.last_offset() >= from => (b.next_offset(), b.len()),
            _ => return (from, 0),
        };
        for (&base, (_, b)) in e.map.range(next..) {
            if base != next || bytes >= limit_bytes {
                break;
            }
            next = b.next_offset();
            bytes += b.len();
        }
        (next, bytes)
    }

    pub(crate) fn budget_bytes(&self) -> usize {
        self.shard.budget_bytes
    }

    /// Drops the read-once batches that start in `[from, to)`: their reader
    /// was just served them.
    pub(crate) fn drop_read_once(&self, from: i64, to: i64) {
        let mut e = self.entries.borrow_mut();
        let bases: Vec<i64> = e.read_once.range(from..to).copied().collect();
        let mut bytes = 0;
        let mut count = 0;
        for base in bases {
            e.read_once.remove(&base);
            if let Some((_, b)) = e.map.remove(&base) {
                bytes += b.len();
                count += 1;
            }
        }
        if count > 0 {
            self.shard.release(bytes, count);
            self.shard.bump(|s| s.read_once_bytes += bytes as u64);
        }
    }

    /// Drops every batch whose last offset is at or above `offset`.
    pub(crate) fn remove_from(&self, offset: i64) {
        let mut e = self.entries.borrow_mut();
        let from = match e.map.range(..offset).next_back() {
            Some((&base, (_, b))) if b.last_offset() >= offset => base,
            _ => offset,
        };
        let gone = e.map.split_off(&from);
        let _ = e.read_once.split_off(&from);
        self.shard
            .release(gone.values().map(|(_, b)| b.len()).sum(), gone.len());
    }

    /// Drops every batch that starts below `offset`.
    pub(crate) fn remove_below(&self, offset: i64) {
        let mut e = self.entries.borrow_mut();
        let keep = e.map.split_off(&offset);
        let gone = std::mem::replace(&mut e.map, keep);
        e.read_once = e.read_once.split_off(&offset);
        self.shard
            .release(gone.values().map(|(_, b)| b.len()).sum(), gone.len());
    }
}

impl Drop for LogCache {
    fn drop(&mut self) {
        let e = self.entries.borrow();
        self.shard
            .release(e.map.values().map(|(_, b)| b.len()).sum(), e.map.len());
        self.shard.logs.borrow_mut().remove(&self.id);
    }
}
