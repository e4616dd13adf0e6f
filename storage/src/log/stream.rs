//! Sequential read-ahead.
//!
//! A streamer serves one sequential reader of a log: it keeps a constant
//! number of chunk reads in flight (`read_ahead_bytes / read_chunk_bytes`),
//! parses and checks batches as chunks arrive in order, and puts them in the
//! shard cache, where the reader finds them (read once: they leave the
//! cache when the reader is served them). It stops once it is
//! `2 * read_ahead_bytes` ahead of its reader (a later read starts a new
//! one), at the end of the written data, on corruption (the reader's own
//! disk read then reports it), or when the log is truncated.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use bytes::BytesMut;
use glommio::sync::Semaphore;

use super::PartitionLog;
use crate::batch::{check_stored, Batch};
use crate::file::{align_down, align_up};
use crate::segment::cut_batch_bytes;

/// Streamers per log: one per concurrent sequential reader, at most.
pub(super) const STREAMERS_MAX: usize = 4;

pub(super) struct Streamer {
    /// The offset it started at.
    start: i64,
    seg_base: Cell<i64>,
    /// Next file position to issue a read at.
    issue_pos: Cell<u64>,
    /// The next offset its reader will ask for.
    reader_next: Cell<i64>,
    /// The next offset it will parse: everything below it was streamed.
    parsed_next: Cell<i64>,
    stop: Cell<bool>,
    done: Cell<bool>,
    /// Closed (waking every waiter) at each step of progress, then replaced.
    progress: RefCell<Rc<Semaphore>>,
}

impl Streamer {
    fn new(start: i64) -> Rc<Streamer> {
        Rc::new(Streamer {
            start,
            seg_base: Cell::new(i64::MIN),
            issue_pos: Cell::new(0),
            reader_next: Cell::new(start),
            parsed_next: Cell::new(start),
            stop: Cell::new(false),
            done: Cell::new(false),
            progress: RefCell::new(Rc::new(Semaphore::new(0))),
        })
    }

    fn notify(&self) {
        let old = std::mem::replace(&mut *self.progress.borrow_mut(), Rc::new(Semaphore::new(0)));
        old.close();
    }

    /// Waits for the next step of progress (or the end).
    pub(super) async fn progress(&self) {
        if self.done.get() {
            return;
        }
        let ev = self.progress.borrow().clone();
        let _ = ev.acquire(1).await;
    }
}

impl PartitionLog {
    fn max_ahead_bytes(&self) -> usize {
        2 * self.cfg.borrow().read_ahead_bytes
    }

    /// The streamer still heading for the batch holding `offset` (it has
    /// not parsed it yet, and it is within its reach), if any.
    pub(super) fn streamer_ahead_of(&self, offset: i64) -> Option<Rc<Streamer>> {
        let (seg_base, pos) = {
            let inner = self.inner.borrow();
            let seg = inner.segments.range(..=offset).next_back()?.1;
            (
                seg.base,
                u64::from(seg.index.lookup((offset - seg.base) as u32).1),
            )
        };
        let reach = self.max_ahead_bytes() as u64;
        self.streamers
            .borrow()
            .iter()
            .find(|s| {
                !s.done.get()
                    && s.parsed_next.get() <= offset
                    && s.seg_base.get() == seg_base
                    && pos <= s.issue_pos.get() + reach
            })
            .cloned()
    }

    /// The streamer whose reader is at `offset`: it streamed that batch.
    fn streamer_behind(&self, offset: i64) -> Option<Rc<Streamer>> {
        self.streamers
            .borrow()
            .iter()
            .find(|s| !s.done.get() && s.start <= offset && offset < s.parsed_next.get())
            .cloned()
    }

    /// Records that a reader was served up to `next` from `offset`, and
    /// starts a streamer ahead of it when too little is cached there.
    pub(super) fn note_served(&self, offset: i64, next: i64) {
        // The reader's progress belongs to the streamer that brought this
        // batch, or to the one still heading past it; while one of them
        // runs, no other starts over the same bytes.
        if let Some(s) = self
            .streamer_behind(offset)
            .or_else(|| self.streamer_ahead_of(next))
        {
            s.reader_next.set(s.reader_next.get().max(next));
            return;
        }
        let window = self.cfg.borrow().read_ahead_bytes;
        let max_ahead = self.max_ahead_bytes();
        if window == 0 || self.cache.budget_bytes() < 2 * max_ahead {
            return; // No room to read ahead: every read goes to disk.
        }
        let (from, ahead) = self.cache.extent(next, max_ahead);
        if ahead >= max_ahead / 2
            || from >= self.log_end_offset()
            || self.streamer_ahead_of(from).is_some()
            || self.streamer_behind(from).is_some()
        {
            return;
        }
        let st = Streamer::new(from);
        st.reader_next.set(next);
        {
            let mut list = self.streamers.borrow_mut();
            list.retain(|s| !s.done.get());
            if list.len() >= STREAMERS_MAX {
                let old = list.remove(0);
                old.stop.set(true);
            }
            list.push(st.clone());
        }
        self.probe.update(|s| s.streams_started += 1);
        let Some(log) = self.me.upgrade() else { return };
        glommio::spawn_local(async move {
            log.run_streamer(&st).await;
            st.done.set(true);
            st.notify();
            log.streamers.borrow_mut().retain(|s| !Rc::ptr_eq(s, &st));
        })
        .detach();
    }

    async fn run_streamer(&self, st: &Streamer) {
        let (chunk, window) = {
            let cfg = self.cfg.borrow();
            (cfg.read_chunk_bytes, cfg.read_ahead_bytes)
        };
        let depth = (window / chunk).max(1);
        let max_ahead = self.max_ahead_bytes();
        let slab_bytes = window.max(chunk);
        let mut offset = st.start;
        'segments: loop {
            let gen = self.inner.borrow().generation;
            let located = {
                let inner = self.inner.borrow();
                if offset < inner.log_start || offset >= inner.next_offset {
                    None
                } else {
                    let (&base, seg) = inner.segments.range(..=offset).next_back().unwrap();
                    let (rel, pos) = seg.index.lookup((offset - base) as u32);
                    let sealed = inner.active().base != base;
                    Some((seg.file.clone(), base, rel, u64::from(pos), sealed))
                }
            };
            let Some((file, seg_base, rel, pos, sealed)) = located else {
                break;
            };
            st.seg_base.set(seg_base);
            let mut expected = seg_base + i64::from(rel);
            let mut carry = BytesMut::new();
            let mut carry_pos = pos;
            let mut issue = align_down(pos);
            let mut skip = (pos - issue) as usize;
            let mut inflight = VecDeque::new();
            let mut inflight_bytes = 0usize;
            loop {
                let written = {
                    let inner = self.inner.borrow();
                    if inner.generation != gen || self.closed.get() || st.stop.get() {
                        break 'segments;
                    }
                    match inner.segments.get(&seg_base) {
                        Some(s) => s.written,
                        None => break 'segments,
                    }
                };
                let ahead = self.cache.extent(st.reader_next.get(), max_ahead).1;
                let mut budget = max_ahead.saturating_sub(ahead + inflight_bytes + carry.len());
                while inflight.len() < depth && issue < written && budget > 0 {
                    let n = (chunk as u64).min(align_up(written) - issue) as usize;
                    let f = file.clone();
                    let at = issue;
                    inflight.push_back((
                        n,
                        glommio::spawn_local(async move { f.read_chunk(at, n).await }),
                    ));
                    issue += n as u64;
                    inflight_bytes += n;
                    budget = budget.saturating_sub(n);
                }
                st.issue_pos.set(issue);
                let Some((n, task)) = inflight.pop_front() else {
                    if sealed && carry_pos >= written && carry.is_empty() {
                        offset = expected; // Go on into the next segment.
                        continue 'segments;
                    }
                    break 'segments; // Far enough ahead, or at the written end.
                };
                inflight_bytes -= n;
                let Ok(data) = task.await else {
                    break 'segments;
                };
                let short = data.len() < n;
                let mut d: &[u8] = &data;
                d = &d[skip.min(d.len())..];
                skip = 0;
                let room = written.saturating_sub(carry_pos + carry.len() as u64) as usize;
                let d = &d[..d.len().min(room)];
                if carry.capacity() - carry.len() < d.len() {
                    // A fresh slab, with only the partial batch carried over:
                    // never grow (and copy) one buffer chunk by chunk.
                    let mut slab = BytesMut::with_capacity(slab_bytes.max(carry.len() + d.len()));
                    slab.extend_from_slice(&carry);
                    carry = slab;
                }
                carry.extend_from_slice(d);
                let mut served = false;
                loop {
                    match check_stored(&carry, Some(expected)) {
                        Ok((h, len)) => {
                            let bytes = carry.split_to(len).freeze();
                            carry_pos += len as u64;
                            expected = h.last_offset() + 1;
                            st.parsed_next.set(expected);
                            if h.last_offset() >= offset && self.inner.borrow().generation == gen {
                                self.cache.insert_read_once(Batch::from_stored(bytes, &h));
                                self.probe.update(|s| s.streamed_bytes += len as u64);
                                served = true;
                            }
                        }
                        Err(_) => match cut_batch_bytes(&carry) {
                            // Needs the bytes of chunks still to come.
                            Some(l) if carry_pos + (l as u64) <= written => break,
                            // Runs past the written data (the rest is pinned
                            // in the cache), or corrupt (the reader's own disk
                            // read will say so): stop here.
                            _ if carry.is_empty() => break,
                            _ => break 'segments,
                        },
                    }
                }
                if served {
                    st.notify();
                }
                if short {
                    break 'segments;
                }
            }
        }
    }
}
