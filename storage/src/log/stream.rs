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

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use bytes::Bytes;
use glommio::sync::Semaphore;

use super::PartitionLog;
use crate::batch::{check_stored_header, Batch, HEADER_BYTES};
use crate::file::{align_down, align_up};

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
        let (chunk, window, via_pool) = {
            let cfg = self.cfg.borrow();
            (
                cfg.read_chunk_bytes,
                cfg.read_ahead_bytes,
                cfg.read_ahead_on_pool,
            )
        };
        let depth = (window / chunk).max(1);
        let max_ahead = self.max_ahead_bytes();
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
            // Read bytes not yet parsed into batches, from file position
            // `carry_pos` on: the start of a batch whose end is still to come.
            let mut carry = Pieces::default();
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
                let mut budget = max_ahead.saturating_sub(ahead + inflight_bytes + carry.len);
                while inflight.len() < depth && issue < written && budget > 0 {
                    let n = (chunk as u64).min(align_up(written) - issue) as usize;
                    let f = file.clone();
                    let at = issue;
                    inflight.push_back((
                        n,
                        glommio::spawn_local(
                            async move { f.read_chunk_owned(at, n, via_pool).await },
                        ),
                    ));
                    issue += n as u64;
                    inflight_bytes += n;
                    budget = budget.saturating_sub(n);
                }
                st.issue_pos.set(issue);
                let Some((n, task)) = inflight.pop_front() else {
                    if sealed && carry_pos >= written && carry.len == 0 {
                        offset = expected; // Go on into the next segment.
                        continue 'segments;
                    }
                    break 'segments; // Far enough ahead, or at the written end.
                };
                inflight_bytes -= n;
                let Ok(mut data) = task.await else {
                    break 'segments;
                };
                let short = data.len() < n;
                let _ = data.split_to(skip.min(data.len()));
                skip = 0;
                let room = written.saturating_sub(carry_pos + carry.len as u64) as usize;
                data.truncate(room);
                carry.push(data);
                let mut served = false;
                loop {
                    let head = carry.prefix(HEADER_BYTES);
                    let (h, len) = match check_stored_header(&head, Some(expected)) {
                        Ok(found) => found,
                        // Needs the bytes of chunks still to come.
                        Err(_) if carry.len < HEADER_BYTES => {
                            if carry.len == 0 || carry_pos + (HEADER_BYTES as u64) <= written {
                                break;
                            }
                            break 'segments; // Runs past the written data.
                        }
                        // Corrupt (the reader's own disk read will say so).
                        Err(_) => break 'segments,
                    };
                    drop(head);
                    if carry.len < len {
                        if carry_pos + (len as u64) <= written {
                            break; // The rest is in chunks still to come.
                        }
                        // Runs past the written data (the rest is pinned in
                        // the cache): stop here.
                        break 'segments;
                    }
                    let Ok(batch) = Batch::from_stored_parts(carry.take(len), &h) else {
                        break 'segments; // Corrupt: the reader's disk read says so.
                    };
                    carry_pos += len as u64;
                    expected = h.last_offset() + 1;
                    st.parsed_next.set(expected);
                    if h.last_offset() >= offset && self.inner.borrow().generation == gen {
                        self.cache.insert_read_once(batch);
                        self.probe.update(|s| s.streamed_bytes += len as u64);
                        served = true;
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

/// Bytes read in order, held as the buffers they were read into.
#[derive(Default)]
struct Pieces {
    q: VecDeque<Bytes>,
    len: usize,
}

impl Pieces {
    fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.len += b.len();
            self.q.push_back(b);
        }
    }

    /// Up to the first `n` bytes, in one slice: borrowed when the first
    /// buffer holds them, else joined.
    fn prefix(&self, n: usize) -> Cow<'_, [u8]> {
        match self.q.front() {
            None => Cow::Borrowed(&[]),
            Some(f) if f.len() >= n || self.q.len() == 1 => Cow::Borrowed(&f[..n.min(f.len())]),
            Some(_) => {
                let mut v = Vec::with_capacity(n);
                for b in &self.q {
                    let k = (n - v.len()).min(b.len());
                    v.extend_from_slice(&b[..k]);
                    if v.len() == n {
                        break;
                    }
                }
                Cow::Owned(v)
            }
        }
    }

    /// Takes the first `n` bytes (`n <= len`) as slices of the buffers.
    fn take(&mut self, mut n: usize) -> Vec<Bytes> {
        let mut out = Vec::with_capacity(1);
        while n > 0 {
            let Some(front) = self.q.front_mut() else {
                break;
            };
            if front.len() <= n {
                let b = self.q.pop_front().expect("front exists");
                n -= b.len();
                self.len -= b.len();
                out.push(b);
            } else {
                out.push(front.split_to(n));
                self.len -= n;
                n = 0;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the pieces give back exactly the bytes pushed, in order,
    // whatever the buffers' sizes: joined prefixes and taken slices alike.
    #[test]
    fn pieces_keep_bytes_in_order() {
        let all: Vec<u8> = (0..200u8).collect();
        for cuts in [vec![0, 200], vec![0, 1, 200], vec![0, 7, 8, 100, 199, 200]] {
            let mut p = Pieces::default();
            for w in cuts.windows(2) {
                p.push(Bytes::copy_from_slice(&all[w[0]..w[1]]));
            }
            p.push(Bytes::new());
            assert_eq!(p.len, 200);
            assert_eq!(&p.prefix(61)[..], &all[..61]);
            assert_eq!(&p.prefix(500)[..], &all[..], "{cuts:?}");
            let mut at = 0;
            for n in [3, 60, 1, 100, 36] {
                let got: Vec<u8> = p.take(n).iter().flat_map(|b| b.to_vec()).collect();
                assert_eq!(got, &all[at..at + n], "{cuts:?} take {n} at {at}");
                at += n;
                assert_eq!(p.len, 200 - at);
            }
            assert!(p.take(1).is_empty());
            assert!(p.prefix(1).is_empty());
        }
    }
}
