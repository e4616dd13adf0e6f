//! The partition log: an ordered set of segments, one of them active.
//!
//! Concurrency (all on one shard thread): appends are serialized by
//! `append_lock`; group commit by `sync_lock` (one waiter at a time makes
//! a sync; the others wait on `synced`, woken together when it ends); the
//! queue of writes in flight is drained in order under `drain_lock`; index
//! files are written under `index_lock`. Locks are always taken in that
//! order (sync, append, drain, index) and no `RefCell` borrow is ever held
//! across an `.await`.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::time::Duration;

use bytes::Bytes;
use glommio::io::DmaBuffer;
use glommio::sync::Semaphore;
use glommio::task::JoinHandle;

use crate::batch::{check_stored, Batch, BatchHeader};
use crate::cache::{LogCache, ShardCache};
use crate::config::{Clock, LogConfig, TimestampType};
use crate::epochs::EpochHistory;
use crate::error::{Result, StorageError};
use crate::file::{
    align_down, create_dir_all, list_dir, parse_segment_name, read_small_file, remove_file,
    sync_dir, write_small_file, DirectFile,
};
use crate::notify::Notify;
use crate::probe::{LogProbe, LogStats};
use crate::segment::{cut_batch_bytes, scan, RecoveryReport, Segment};
use sluice_tuning::limits::DIRECT_IO_ALIGN_BYTES as ALIGN;

/// What an append assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The append time written into the batch (LogAppendTime), else -1.
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
}

/// One segment as seen from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub base_offset: i64,
    pub next_offset: i64,
    pub bytes: u64,
    pub max_timestamp: i64,
}

/// What opening the log found, summed over its segments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub segments: usize,
    /// Bytes of segment data read to validate the log.
    pub scanned_bytes: u64,
    /// Bytes of torn or corrupt tail cut away.
    pub truncated_bytes: u64,
    /// Segments whose indexes had to be rebuilt.
    pub rebuilt_indexes: usize,
    /// The log was closed cleanly and opened from its mark: no batch read.
    pub clean: bool,
}

/// The file a clean close leaves in a log's directory (see `close`).
pub const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";

/// What a retention pass deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub deleted_segments: usize,
    pub deleted_bytes: u64,
    pub log_start_offset: i64,
}

struct Tail {
    buf: DmaBuffer,
    /// Aligned file position of `buf[0]` in the active segment.
    file_pos: u64,
    /// Valid bytes in `buf`.
    len: usize,
}

struct PendingWrite {
    seq: u64,
    /// The write's result, and its buffer back for reuse.
    task: JoinHandle<(std::io::Result<()>, Rc<DmaBuffer>)>,
    seg_base: i64,
    end_pos: u64,
}

struct Inner {
    segments: BTreeMap<i64, Segment>,
    log_start: i64,
    next_offset: i64,
    high_watermark: i64,
    /// Every batch below this offset is covered by an fdatasync.
    durable: i64,
    leader_epoch: i32,
    /// Where each leader epoch's batches begin.
    epochs: EpochHistory,
    tail: Tail,
    pending: VecDeque<PendingWrite>,
    write_seq: u64,
    /// The last write issued ended inside a page that the next write will
    /// rewrite: it must complete before the next one is issued.
    last_write_partial: bool,
    /// Bytes were appended since the last write was issued.
    tail_dirty: bool,
    /// (end position, next offset) of batches in the active segment not yet
    /// known to be written; they stay pinned in the cache until they are.
    unwritten: VecDeque<(u64, i64)>,
    appended_bytes: u64,
    synced_bytes: u64,
    oldest_unsynced_ms: Option<i64>,
    /// Bumped by truncation and retention, so a disk read that raced with
    /// one does not cache or serve what was removed.
    generation: u64,
    /// Tail buffers whose writes completed, kept for reuse.
    free_buffers: Vec<DmaBuffer>,
}

/// Tail buffers kept for reuse per log.
const FREE_BUFFERS_MAX: usize = 2;
/// How often the active segment's new index entries are written.
const INDEX_PERSIST_INTERVAL: Duration = Duration::from_millis(500);

impl Inner {
    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has a segment")
    }
    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has a segment")
    }
}

/// A partition's log on one shard. Shared as `Rc<PartitionLog>` by the
/// tasks of that shard only.
pub struct PartitionLog {
    dir: PathBuf,
    cfg: RefCell<LogConfig>,
    clock: Rc<dyn Clock>,
    cache: LogCache,
    inner: RefCell<Inner>,
    append_lock: Semaphore,
    sync_lock: Semaphore,
    drain_lock: Semaphore,
    index_lock: Semaphore,
    poisoned: Cell<bool>,
    closed: Cell<bool>,
    /// A waiter of `wait_durable` is making a sync; the others wait for
    /// `synced`.
    syncing: Cell<bool>,
    synced: Rc<Notify>,
    flush_scheduled: Cell<bool>,
    /// A task is waiting to sync the oldest unsynced append once it is
    /// `flush_interval_ms` old.
    age_flush_scheduled: Cell<bool>,
    open_report: OpenReport,
    me: Weak<PartitionLog>,
    probe: LogProbe,
    /// `probe`'s append count at the last fdatasync (group-commit size).
    appends_synced: Cell<u64>,
    streamers: RefCell<Vec<Rc<stream::Streamer>>>,
}

mod stream;

fn closed<T>(_: T) -> StorageError {
    StorageError::Closed
}

async fn load_tail(seg: &Segment, cap: usize) -> Result<Tail> {
    let file_pos = align_down(seg.size);
    let len = (seg.size - file_pos) as usize;
    let mut buf = seg.file.alloc(cap);
    if len > 0 {
        let page = seg
            .file
            .read_range(file_pos, len, ALIGN)
            .await
            .map_err(|e| StorageError::io(&seg.log_path, e))?;
        if page.len() != len {
            return Err(StorageError::CorruptData {
                path: seg.log_path.clone(),
                position: file_pos,
                reason: format!("last page reads {} of {len} bytes", page.len()),
            });
        }
        buf.as_bytes_mut()[..len].copy_from_slice(&page);
    }
    Ok(Tail { buf, file_pos, len })
}

impl PartitionLog {
    /// Opens (recovering) or creates the log in `dir`. Reads every segment's
    /// indexes and validates the tail of the last segment; never whole logs.
    pub async fn open(
        dir: impl AsRef<Path>,
        cfg: LogConfig,
        cache: &Rc<ShardCache>,
        clock: Rc<dyn Clock>,
    ) -> Result<Rc<PartitionLog>> {
        cfg.validate()?;
        let dir = dir.as_ref();
        let dir = create_dir_all(dir)
            .await
            .map_err(|e| StorageError::io(dir, e))?;
        let names = list_dir(&dir)
            .await
            .map_err(|e| StorageError::io(&dir, e))?;
        let mut bases: Vec<i64> = names.iter().filter_map(|n| parse_segment_name(n)).collect();
        bases.sort_unstable();
        let window = cfg.read_ahead_bytes.max(cfg.read_chunk_bytes);
        let (interval, chunk) = (cfg.index_interval_bytes, cfg.read_chunk_bytes);
        let mut segments = BTreeMap::new();
        let mut report = OpenReport::default();
        let mut add = |r: &RecoveryReport| {
            report.scanned_bytes += r.scanned_bytes;
            report.truncated_bytes += r.truncated_bytes;
            report.rebuilt_indexes += usize::from(r.rebuilt_index);
        };
        for w in bases.windows(2) {
            let (seg, r) = Segment::open_sealed(&dir, w[0], w[1], interval, window, chunk).await?;
            add(&r);
            segments.insert(seg.base, seg);
        }
        // A clean close left a mark: the last segment opens from it and
        // its indexes, reading no batch. The mark goes before anything
        // can be appended (a crash later must not find it).
        let mark_path = dir.join(CLEAN_SHUTDOWN_FILE);
        let mark = match read_small_file(&mark_path).await {
            Ok(Some(b)) => {
                remove_file(&mark_path)
                    .await
                    .map_err(|e| StorageError::io(&mark_path, e))?;
                sync_dir(&dir)
                    .await
                    .map_err(|e| StorageError::io(&dir, e))?;
                crate::segment::CleanMark::decode(&b)
            }
            _ => None,
        };
        if let Some(&last) = bases.last() {
            let clean = match mark.filter(|m| m.base == last) {
                Some(m) => Segment::open_clean(&dir, &m, interval).await?,
                None => None,
            };
            report.clean = clean.is_some();
            let seg = match clean {
                Some(seg) => seg,
                None => {
                    let (seg, r) =
                        Segment::recover_active(&dir, last, interval, window, chunk).await?;
                    add(&r);
                    seg
                }
            };
            segments.insert(seg.base, seg);
        } else {
            let seg = Segment::create(&dir, 0, interval).await?;
            sync_dir(&dir)
                .await
                .map_err(|e| StorageError::io(&dir, e))?;
            segments.insert(0, seg);
        }
        report.segments = segments.len();
        let active = segments.values().next_back().unwrap();
        let tail = load_tail(active, cfg.tail_buffer_bytes).await?;
        let next_offset = active.next_offset;
        let log_start = *segments.keys().next().unwrap();
        let epochs = EpochHistory::load(&dir, log_start, next_offset).await?;
        let cache = cache.register();
        cache.set_pinned_from(next_offset);
        if report.truncated_bytes > 0 || report.rebuilt_indexes > 0 {
            tracing::warn!(dir = %dir.display(), ?report, "log recovered with repairs");
        }
        let log = Rc::new_cyclic(|me| PartitionLog {
            me: me.clone(),
            dir,
            cfg: RefCell::new(cfg),
            clock,
            cache,
            inner: RefCell::new(Inner {
                segments,
                log_start,
                next_offset,
                high_watermark: next_offset,
                durable: next_offset,
                leader_epoch: epochs.latest().map_or(0, |(e, _)| e),
                epochs,
                tail,
                pending: VecDeque::new(),
                write_seq: 0,
                last_write_partial: false,
                tail_dirty: false,
                unwritten: VecDeque::new(),
                appended_bytes: 0,
                synced_bytes: 0,
                oldest_unsynced_ms: None,
                generation: 0,
                free_buffers: Vec::new(),
            }),
            append_lock: Semaphore::new(1),
            sync_lock: Semaphore::new(1),
            drain_lock: Semaphore::new(1),
            index_lock: Semaphore::new(1),
            poisoned: Cell::new(false),
            closed: Cell::new(false),
            syncing: Cell::new(false),
            synced: Rc::new(Notify::default()),
            flush_scheduled: Cell::new(false),
            age_flush_scheduled: Cell::new(false),
            open_report: report,
            probe: LogProbe::default(),
            appends_synced: Cell::new(0),
            streamers: RefCell::new(Vec::new()),
        });
        glommio::spawn_local(crate::stall::watch("flusher", flusher(Rc::downgrade(&log)))).detach();
        Ok(log)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn open_report(&self) -> &OpenReport {
        &self.open_report
    }
    /// The log's counters.
    pub fn stats(&self) -> LogStats {
        self.probe.get()
    }
    pub fn log_start_offset(&self) -> i64 {
        self.inner.borrow().log_start
    }
    /// The offset the next appended record gets.
    pub fn log_end_offset(&self) -> i64 {
        self.inner.borrow().next_offset
    }
    pub fn high_watermark(&self) -> i64 {
        self.inner.borrow().high_watermark
    }
    /// Every batch below this offset is on stable storage.
    pub fn durable_offset(&self) -> i64 {
        self.inner.borrow().durable
    }
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.get()
    }
    pub fn config(&self) -> LogConfig {
        self.cfg.borrow().clone()
    }
    /// Applies new topic configs; they take effect from the next append,
    /// roll or retention pass.
    pub fn set_config(&self, cfg: LogConfig) -> Result<()> {
        cfg.validate()?;
        *self.cfg.borrow_mut() = cfg;
        Ok(())
    }
    /// The leader epoch written into every batch appended from now on.
    pub fn set_leader_epoch(&self, epoch: i32) {
        self.inner.borrow_mut().leader_epoch = epoch;
    }

    /// Takes the lead at `epoch`: batches appended from now on carry it,
    /// and the epoch history records that it begins at the log end
    /// (durably, before this returns).
    pub async fn begin_epoch(&self, epoch: i32) -> Result<()> {
        self.set_leader_epoch(epoch);
        let _a = self.append_lock.acquire_permit(1).await.map_err(closed)?;
        self.check_writable()?;
        let start = self.log_end_offset();
        self.note_epoch(epoch, start).await
    }

    /// The leader epoch history: (epoch, first offset), oldest first.
    pub fn leader_epochs(&self) -> Vec<(i32, i64)> {
        self.inner.borrow().epochs.entries().to_vec()
    }

    /// The latest leader epoch of the log's batches (-1 when empty of
    /// history).
    pub fn latest_epoch(&self) -> i32 {
        self.inner.borrow().epochs.latest().map_or(-1, |(e, _)| e)
    }

    /// Where `epoch` ends in this log, as OffsetForLeaderEpoch answers:
    /// the largest epoch at most `epoch` and the offset after its last
    /// batch; (-1, -1) for an epoch newer than any here.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        let inner = self.inner.borrow();
        inner.epochs.end_offset_for(epoch, inner.next_offset)
    }

    /// Records `epoch` as beginning at `start` if it is new, writing the
    /// history before the batch that starts it. The caller holds
    /// `append_lock`.
    async fn note_epoch(&self, epoch: i32, start: i64) -> Result<()> {
        // Every append passes here: the common case touches nothing.
        if self.latest_epoch() == epoch {
            return Ok(());
        }
        self.change_epochs(|h| h.assign(epoch, start).map(drop))
            .await
    }

    /// Applies `change` to the epoch history and, when it changed
    /// anything, writes the history (when its file is kept) before the
    /// change takes effect. The caller holds `append_lock`.
    async fn change_epochs(
        &self,
        change: impl FnOnce(&mut EpochHistory) -> Result<()>,
    ) -> Result<()> {
        let old = self.inner.borrow().epochs.clone();
        let mut h = old.clone();
        change(&mut h)?;
        if h != old {
            if h.must_write() {
                h.write(&self.dir).await?;
            }
            self.inner.borrow_mut().epochs = h;
        }
        Ok(())
    }

    /// Sets the high watermark to `offset` (within the log), back if it
    /// must: a replicated log that opened does not know how much of it
    /// was committed, and starts from its log start.
    pub fn reset_high_watermark(&self, offset: i64) {
        let mut inner = self.inner.borrow_mut();
        inner.high_watermark = offset.clamp(inner.log_start, inner.next_offset);
    }

    /// Advances the high watermark (never past the log end, never back).
    pub fn set_high_watermark(&self, offset: i64) {
        let mut inner = self.inner.borrow_mut();
        inner.high_watermark = offset.clamp(inner.high_watermark, inner.next_offset);
    }

    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.inner
            .borrow()
            .segments
            .values()
            .map(|s| SegmentInfo {
                base_offset: s.base,
                next_offset: s.next_offset,
                bytes: s.size,
                max_timestamp: s.max_timestamp,
            })
            .collect()
    }

    fn check_writable(&self) -> Result<()> {
        if self.closed.get() {
            return Err(StorageError::Closed);
        }
        if self.poisoned.get() {
            return Err(StorageError::Poisoned(self.dir.clone()));
        }
        Ok(())
    }

    /// Marks the log unusable after a failed write or sync. Nothing is
    /// acknowledged after this until the log is reopened and recovered.
    fn poison(&self, path: &Path, e: std::io::Error) -> StorageError {
        if !self.poisoned.replace(true) {
            tracing::error!(log = %self.dir.display(), file = %path.display(), error = %e,
                "I/O failure: log poisoned, no further acknowledgements until reopened");
        }
        StorageError::io(path, e)
    }

    /// Validates one record batch and appends it, assigning consecutive
    /// offsets. Returns once the batch is in the log (readable, not yet
    /// durable: see [`PartitionLog::wait_durable`]). A refused batch leaves
    /// the log untouched.
    pub async fn append(&self, batch: Bytes) -> Result<AppendInfo> {
        self.append_as(batch, false).await
    }

    /// Appends a batch a leader stored, as it stored it: its offsets,
    /// leader epoch and timestamps are kept, so this log holds the same
    /// bytes as the leader's. The batch must start at this log's end
    /// (a follower fetches from there); anything else is refused and the
    /// log is left untouched.
    pub async fn append_replica(&self, batch: Bytes) -> Result<AppendInfo> {
        self.append_as(batch, true).await
    }

    async fn append_as(&self, batch: Bytes, replica: bool) -> Result<AppendInfo> {
        let started = std::time::Instant::now();
        let r = self.append_checked(batch, replica).await;
        crate::histogram::record(|h| h.append_us.record(started.elapsed()));
        r
    }

    async fn append_checked(&self, batch: Bytes, replica: bool) -> Result<AppendInfo> {
        self.check_writable()?;
        // A small batch is a slice of a receive buffer shared with other
        // requests: the cache would hold the whole buffer while counting
        // the batch alone.
        let batch = if batch.len() < sluice_tuning::limits::CACHE_COPY_BATCH_BYTES_MAX {
            Bytes::copy_from_slice(&batch)
        } else {
            batch
        };
        let (limit, lat) = {
            let cfg = self.cfg.borrow();
            (
                cfg.batch_limit(),
                cfg.timestamp_type == TimestampType::LogAppendTime,
            )
        };
        let h = crate::batch::validate_async(&batch, limit).await?;
        let _permit = self.append_lock.acquire_permit(1).await.map_err(closed)?;
        self.check_writable()?;
        let now = self.clock.now_ms();
        if self.should_roll(batch.len() as u64, &h, now) {
            self.roll().await?;
        }
        let (epoch, start) = {
            let inner = self.inner.borrow();
            let e = if replica {
                h.partition_leader_epoch
            } else {
                inner.leader_epoch
            };
            (e, inner.next_offset)
        };
        self.note_epoch(epoch, start).await?;
        let stamped = {
            let mut inner = self.inner.borrow_mut();
            let base = inner.next_offset;
            let b = if replica {
                if h.base_offset != base {
                    return Err(StorageError::InvalidRecord(format!(
                        "a replicated batch at offset {} does not follow the log's end {base}",
                        h.base_offset
                    )));
                }
                // The same offset and epoch, no new timestamp: the bytes
                // are the leader's.
                Batch::stamp(batch, &h, base, h.partition_leader_epoch, None)
            } else {
                Batch::stamp(batch, &h, base, epoch, lat.then_some(now))
            };
            let len = b.len() as u64;
            let seg = inner.active_mut();
            let pos = seg.size;
            seg.note_batch(pos, base, b.next_offset(), len, b.max_timestamp(), false);
            seg.size += len;
            seg.first_append_ms.get_or_insert(now);
            let end = seg.size;
            inner.next_offset = b.next_offset();
            inner.unwritten.push_back((end, b.next_offset()));
            inner.appended_bytes += len;
            inner.oldest_unsynced_ms.get_or_insert(now);
            b
        };
        // A second CRC pass over every appended byte: checked in debug
        // builds and tests (stamp changes only bytes outside the CRC, or
        // recomputes it), not paid on every produce in release.
        debug_assert!(stamped.crc_ok(), "a stamped batch keeps a valid CRC");
        self.probe.update(|s| {
            s.appends += 1;
            s.appended_bytes += stamped.len() as u64;
        });
        self.cache.insert(stamped.clone());
        for chunk in stamped.chunks() {
            let mut at = 0;
            while at < chunk.len() {
                let full = {
                    let mut inner = self.inner.borrow_mut();
                    let t = &mut inner.tail;
                    let cap = t.buf.len();
                    let n = (cap - t.len).min(chunk.len() - at);
                    t.buf.as_bytes_mut()[t.len..t.len + n].copy_from_slice(&chunk[at..at + n]);
                    t.len += n;
                    at += n;
                    let full = t.len == cap;
                    inner.tail_dirty = true;
                    full
                };
                if full {
                    self.issue_write(true).await?;
                }
            }
        }
        let (unsynced, log_start) = {
            let inner = self.inner.borrow();
            (inner.appended_bytes - inner.synced_bytes, inner.log_start)
        };
        if !self.age_flush_scheduled.replace(true) {
            glommio::spawn_local(crate::stall::watch("age flush", age_flush(self.me.clone())))
                .detach();
        }
        if unsynced >= self.cfg.borrow().flush_interval_bytes && !self.flush_scheduled.get() {
            self.flush_scheduled.set(true);
            let weak = self.me.clone();
            glommio::spawn_local(crate::stall::watch("sync", async move {
                if let Some(log) = weak.upgrade() {
                    let _ = log.sync().await;
                    log.flush_scheduled.set(false);
                }
            }))
            .detach();
        }
        Ok(AppendInfo {
            base_offset: stamped.base_offset(),
            last_offset: stamped.last_offset(),
            log_append_time_ms: if lat { now } else { -1 },
            log_start_offset: log_start,
        })
    }

    fn should_roll(&self, len: u64, h: &BatchHeader, now: i64) -> bool {
        let cfg = self.cfg.borrow();
        let inner = self.inner.borrow();
        let seg = inner.active();
        if seg.size == 0 {
            return false;
        }
        seg.size + len > cfg.segment_bytes
            || seg
                .first_append_ms
                .is_some_and(|t| now - t >= cfg.segment_ms)
            || !offsets_fit(seg.base, inner.next_offset, h.last_offset_delta)
    }

    /// Writes the tail buffer to the file: all of it when `full`, else up to
    /// the last appended byte (padding the last page, which stays in the
    /// tail to be rewritten as it fills). The caller holds `append_lock`.
    async fn issue_write(&self, full: bool) -> Result<()> {
        if self.inner.borrow().last_write_partial {
            self.drain_all().await?;
        }
        let depth = self.cfg.borrow().write_behind;
        loop {
            let front = {
                let inner = self.inner.borrow();
                (inner.pending.len() >= depth).then(|| inner.pending.front().unwrap().seq)
            };
            match front {
                Some(seq) => self.drain_until(seq).await?,
                None => break,
            }
        }
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        if !full && !inner.tail_dirty {
            return Ok(());
        }
        let (file, seg_base) = {
            let a = inner.active();
            (a.file.clone(), a.base)
        };
        let t = &mut inner.tail;
        let cap = t.buf.len();
        let len = t.len;
        assert!(!full || len == cap);
        if len == 0 {
            inner.tail_dirty = false;
            return Ok(());
        }
        let keep = if full { 0 } else { len % ALIGN };
        let write_len = if full {
            cap
        } else {
            len.div_ceil(ALIGN) * ALIGN
        };
        // Reuse a tail buffer whose write completed: fresh memory costs a
        // page fault per page on first touch.
        let mut fresh = inner
            .free_buffers
            .pop()
            .filter(|b| b.len() == cap)
            .unwrap_or_else(|| file.alloc(cap));
        if keep > 0 {
            fresh.as_bytes_mut()[..keep].copy_from_slice(&t.buf.as_bytes()[len - keep..len]);
        }
        let mut old = std::mem::replace(&mut t.buf, fresh);
        if write_len > len {
            old.as_bytes_mut()[len..write_len].fill(0);
        }
        old.trim_to_size(write_len);
        let pos = t.file_pos;
        t.file_pos += (len - keep) as u64;
        t.len = keep;
        inner.write_seq += 1;
        inner.last_write_partial = keep > 0;
        inner.tail_dirty = false;
        let seq = inner.write_seq;
        let task = glommio::spawn_local(crate::stall::watch("segment write", async move {
            let buf = Rc::new(old);
            let started = std::time::Instant::now();
            let r = file.write(buf.clone(), pos).await;
            crate::histogram::record(|h| h.write_us.record(started.elapsed()));
            (r, buf)
        }))
        .detach();
        inner.pending.push_back(PendingWrite {
            seq,
            task,
            seg_base,
            end_pos: pos + len as u64,
        });
        Ok(())
    }

    /// Waits, in issue order, for the writes up to `seq` to complete.
    async fn drain_until(&self, seq: u64) -> Result<()> {
        let _d = self.drain_lock.acquire_permit(1).await.map_err(closed)?;
        loop {
            let w = {
                let mut inner = self.inner.borrow_mut();
                match inner.pending.front() {
                    Some(w) if w.seq <= seq => inner.pending.pop_front().unwrap(),
                    _ => break,
                }
            };
            let (res, buf) = match w.task.await {
                Some((res, buf)) => (res, Some(buf)),
                None => (Err(std::io::Error::other("write task was cancelled")), None),
            };
            let mut inner = self.inner.borrow_mut();
            let cap = self.cfg.borrow().tail_buffer_bytes;
            if let Some(b) = buf.and_then(|b| Rc::try_unwrap(b).ok()) {
                if b.len() == cap && inner.free_buffers.len() < FREE_BUFFERS_MAX {
                    inner.free_buffers.push(b);
                }
            }
            if let Err(e) = res {
                let path = inner
                    .segments
                    .get(&w.seg_base)
                    .map(|s| s.log_path.clone())
                    .unwrap_or_default();
                drop(inner);
                return Err(self.poison(&path, e));
            }
            let is_active = inner.active().base == w.seg_base;
            if let Some(seg) = inner.segments.get_mut(&w.seg_base) {
                seg.written = seg.written.max(w.end_pos);
            }
            if is_active {
                let mut upto = None;
                while let Some(&(end, next)) = inner.unwritten.front() {
                    if end > w.end_pos {
                        break;
                    }
                    upto = Some(next);
                    inner.unwritten.pop_front();
                }
                drop(inner);
                if let Some(n) = upto {
                    self.cache.unpin_below(n);
                }
            }
        }
        if self.poisoned.get() {
            return Err(StorageError::Poisoned(self.dir.clone()));
        }
        Ok(())
    }

    async fn drain_all(&self) -> Result<()> {
        let seq = self.inner.borrow().write_seq;
        self.drain_until(seq).await
    }

    /// Seals the active segment (written, cut to size, synced, indexes
    /// complete) and starts a new one. The caller holds `append_lock`.
    async fn roll(&self) -> Result<()> {
        self.issue_write(false).await?;
        self.drain_all().await?;
        let (file, path, size, new_base) = {
            let inner = self.inner.borrow();
            let a = inner.active();
            (
                a.file.clone(),
                a.log_path.clone(),
                a.size,
                inner.next_offset,
            )
        };
        file.truncate(size)
            .await
            .map_err(|e| self.poison(&path, e))?;
        file.fdatasync().await.map_err(|e| self.poison(&path, e))?;
        {
            let _i = self.index_lock.acquire_permit(1).await.map_err(closed)?;
            let delta = {
                let mut inner = self.inner.borrow_mut();
                let a = inner.active_mut();
                a.seal_time_index();
                a.take_index_delta()
            };
            delta.write(true).await?;
        }
        let interval = self.cfg.borrow().index_interval_bytes;
        let seg = Segment::create(&self.dir, new_base, interval).await?;
        sync_dir(&self.dir)
            .await
            .map_err(|e| self.poison(&self.dir.clone(), e))?;
        let cap = self.cfg.borrow().tail_buffer_bytes;
        let buf = seg.file.alloc(cap);
        {
            let mut inner = self.inner.borrow_mut();
            inner.durable = inner.durable.max(new_base);
            inner.segments.insert(new_base, seg);
            inner.tail = Tail {
                buf,
                file_pos: 0,
                len: 0,
            };
            inner.last_write_partial = false;
            inner.tail_dirty = false;
            inner.unwritten.clear();
        }
        self.cache.unpin_below(new_base);
        Ok(())
    }

    /// Returns once the batch holding `offset` (and everything before it) is
    /// on stable storage. Concurrent callers share syncs: one fdatasync
    /// covers every append made before it started. One caller at a time
    /// makes the sync; the rest wait for it to end and wake together, so
    /// a group commit releases all of its waiters in one pass of the
    /// shard's loop (handing a lock from one to the next would release
    /// them one task switch at a time, and their answers would leave one
    /// system call each).
    pub async fn wait_durable(&self, offset: i64) -> Result<()> {
        loop {
            if self.poisoned.get() {
                return Err(StorageError::Poisoned(self.dir.clone()));
            }
            let (durable, end) = {
                let inner = self.inner.borrow();
                (inner.durable, inner.next_offset)
            };
            if durable > offset || end == 0 || durable >= end {
                return Ok(());
            }
            if self.syncing.get() {
                // The sync on its way covers this offset, or the next
                // one, made once it ends, will.
                let seen = self.synced.generation();
                self.synced.changed(seen).await;
                continue;
            }
            let _syncer = Syncer::start(self);
            self.sync_covering(offset.min(end - 1)).await?;
        }
    }

    /// Makes every append so far durable.
    pub async fn sync(&self) -> Result<()> {
        let end = self.log_end_offset();
        if end == 0 {
            return Ok(());
        }
        self.wait_durable(end - 1).await
    }

    async fn sync_covering(&self, offset: i64) -> Result<()> {
        let _s = self.sync_lock.acquire_permit(1).await.map_err(closed)?;
        if self.inner.borrow().durable > offset {
            return Ok(());
        }
        self.check_writable()?;
        let (seq, file, path, target, bytes_mark) = {
            let _a = self.append_lock.acquire_permit(1).await.map_err(closed)?;
            self.issue_write(false).await?;
            let inner = self.inner.borrow();
            let a = inner.active();
            (
                inner.write_seq,
                a.file.clone(),
                a.log_path.clone(),
                inner.next_offset,
                inner.appended_bytes,
            )
        };
        self.drain_until(seq).await?;
        self.probe.update(|s| s.syncs += 1);
        let appends = self.probe.get().appends;
        let started = std::time::Instant::now();
        file.fdatasync().await.map_err(|e| self.poison(&path, e))?;
        let covered = appends - self.appends_synced.replace(appends);
        crate::histogram::record(|h| {
            h.sync_us.record(started.elapsed());
            h.commit_appends.record_value(covered);
        });
        let now = self.clock.now_ms();
        let mut inner = self.inner.borrow_mut();
        inner.durable = inner.durable.max(target);
        inner.synced_bytes = inner.synced_bytes.max(bytes_mark);
        inner.oldest_unsynced_ms = (inner.synced_bytes < inner.appended_bytes).then_some(now);
        Ok(())
    }

    /// Writes the active segment's new index entries of synced batches
    /// (the entries are not synced themselves: they only shorten
    /// recovery's scan, which checks the batch an entry names; but one
    /// written ahead of its data could outlive a hole before it).
    async fn persist_active_index(&self) -> Result<()> {
        let _i = self.index_lock.acquire_permit(1).await.map_err(closed)?;
        let delta = {
            let mut inner = self.inner.borrow_mut();
            let durable = inner.durable;
            inner.active_mut().take_durable_index_delta(durable)
        };
        delta.write(false).await
    }

    /// Reads whole batches starting with the one that holds `offset`, up to
    /// `max_bytes` (the first batch is returned whole even when larger).
    /// Served from the cache when it holds the batch, else from disk with
    /// every batch CRC-checked. Empty at the log end.
    pub async fn read(&self, offset: i64, max_bytes: usize) -> Result<Vec<Batch>> {
        // Disk reads that raced with a truncation are retried, a bounded
        // number of times; waiting on a streamer is not a retry.
        let mut attempts = 0;
        while attempts < 64 {
            let (start, end) = {
                let inner = self.inner.borrow();
                (inner.log_start, inner.next_offset)
            };
            if offset < start || offset > end {
                return Err(StorageError::OffsetOutOfRange {
                    offset,
                    log_start: start,
                    log_end: end,
                });
            }
            if offset == end {
                return Ok(Vec::new());
            }
            let chain = self.cache.chain(offset, max_bytes);
            if let Some(last) = chain.last() {
                self.probe.update(|s| s.cache_reads += 1);
                self.note_served(offset, last.next_offset());
                self.cache
                    .drop_read_once(chain[0].base_offset(), last.next_offset());
                return Ok(chain);
            }
            // A streamer reading toward this offset will bring it: wait for
            // it rather than read the same bytes twice.
            if let Some(st) = self.streamer_ahead_of(offset) {
                st.progress().await;
                continue;
            }
            attempts += 1;
            let window = max_bytes.max(self.cfg.borrow().read_chunk_bytes);
            let Some(got) = self.fill_from_disk(offset, window).await? else {
                continue; // Truncated or trimmed meanwhile: look again.
            };
            // The caller gets what fits in max_bytes, and always the first
            // batch; the rest stays in the cache for the next read.
            let mut total = 0usize;
            let out: Vec<Batch> = got
                .into_iter()
                .take_while(|b| {
                    let first = total == 0;
                    total += b.len();
                    first || total <= max_bytes
                })
                .collect();
            if let Some(last) = out.last() {
                self.note_served(offset, last.next_offset());
            }
            return Ok(out);
        }
        Err(StorageError::CorruptData {
            path: self.dir.clone(),
            position: 0,
            reason: format!("offset {offset} could not be read consistently"),
        })
    }

    /// Reads from disk about `window` bytes starting with the batch that
    /// holds `offset`, checks every batch and caches them all. Returns the
    /// batches from the one holding `offset`, or `None` when a truncation or
    /// retention raced with the read (nothing was cached then).
    async fn fill_from_disk(&self, offset: i64, window: usize) -> Result<Option<Vec<Batch>>> {
        // Index entries to step back past, when the one found does not point
        // at the start of its batch. Reads never change the index.
        for back in 0..64 {
            let gen = self.inner.borrow().generation;
            let (file, path, seg_base, rel, pos, written) = {
                let inner = self.inner.borrow();
                if offset < inner.log_start || offset >= inner.next_offset {
                    return Ok(None);
                }
                let seg = inner.segments.range(..=offset).next_back().unwrap().1;
                let (rel, pos) = seg.index.lookup_back((offset - seg.base) as u32, back);
                (
                    seg.file.clone(),
                    seg.log_path.clone(),
                    seg.base,
                    rel,
                    u64::from(pos),
                    seg.written,
                )
            };
            if pos >= written {
                // Not on disk yet: it is pinned in the cache.
                return Ok(None);
            }
            let chunk = self.cfg.borrow().read_chunk_bytes;
            let got = read_disk(
                &file,
                &path,
                pos,
                written,
                seg_base + i64::from(rel),
                offset,
                window,
                chunk,
            )
            .await;
            if self.inner.borrow().generation != gen {
                return Ok(None);
            }
            let got = match got {
                Err(DiskRead::NotAtBatch(reason)) if pos > 0 => {
                    tracing::warn!(segment = %path.display(), entry = rel, %reason,
                        "offset index entry does not point at its batch; reading from an earlier one");
                    continue;
                }
                Err(DiskRead::NotAtBatch(reason)) => {
                    return Err(StorageError::CorruptData {
                        path,
                        position: pos,
                        reason,
                    })
                }
                Err(DiskRead::Failed(e)) => return Err(e),
                Ok(got) => got,
            };
            self.probe.update(|s| {
                s.disk_reads += 1;
                s.disk_read_bytes += got.iter().map(|b| b.len() as u64).sum::<u64>();
            });
            for b in &got {
                self.cache.insert(b.clone());
            }
            return Ok(Some(got));
        }
        Ok(None)
    }

    /// The first offset whose record timestamp is >= `ts` (Kafka's
    /// ListOffsets by time), or `None` when no record is that new.
    pub async fn offset_for_timestamp(&self, ts: i64) -> Result<Option<i64>> {
        let start = {
            let inner = self.inner.borrow();
            let found = inner
                .segments
                .values()
                .find(|s| s.max_timestamp >= ts && s.next_offset > s.base)
                .map(|s| s.base + i64::from(s.time_index.scan_start(ts)));
            match found {
                Some(o) => o.max(inner.log_start),
                None => return Ok(None),
            }
        };
        let mut o = start;
        loop {
            let batches = self.read(o, 1 << 20).await?;
            let Some(last) = batches.last() else {
                return Ok(None);
            };
            if let Some(b) = batches.iter().find(|b| b.max_timestamp() >= ts) {
                return Ok(Some(b.first_offset_at_or_after(ts).max(o)));
            }
            o = last.next_offset();
        }
    }

    /// Deletes whole segments past `retention.ms` (by their newest
    /// timestamp) or beyond `retention.bytes`, oldest first, never the active
    /// segment and never above the high watermark; advances the log start.
    pub async fn apply_retention(&self) -> Result<RetentionOutcome> {
        self.delete_segments(None).await
    }

    /// Deletes the whole segments that hold only offsets below `offset`
    /// (never the active segment, never above the high watermark), as
    /// retention does; the log start moves up to the first kept segment.
    pub async fn delete_segments_below(&self, offset: i64) -> Result<RetentionOutcome> {
        self.delete_segments(Some(offset)).await
    }

    async fn delete_segments(&self, below: Option<i64>) -> Result<RetentionOutcome> {
        let _s = self.sync_lock.acquire_permit(1).await.map_err(closed)?;
        let _a = self.append_lock.acquire_permit(1).await.map_err(closed)?;
        let now = self.clock.now_ms();
        let cfg = self.config();
        let removed: Vec<Segment> = {
            let mut inner = self.inner.borrow_mut();
            let total: u64 = inner.segments.values().map(|s| s.size).sum();
            let mut remaining = total;
            let mut doomed = Vec::new();
            let count = inner.segments.len();
            for seg in inner.segments.values().take(count - 1) {
                let doomed_here = match below {
                    Some(offset) => seg.next_offset <= offset,
                    None => {
                        let by_time =
                            cfg.retention_ms >= 0 && now - seg.max_timestamp > cfg.retention_ms;
                        let by_size = cfg.retention_bytes >= 0
                            && remaining - seg.size >= cfg.retention_bytes as u64;
                        by_time || by_size
                    }
                };
                if !doomed_here || seg.next_offset > inner.high_watermark {
                    break;
                }
                remaining -= seg.size;
                doomed.push(seg.base);
            }
            let removed: Vec<Segment> = doomed
                .iter()
                .map(|b| inner.segments.remove(b).unwrap())
                .collect();
            if !removed.is_empty() {
                inner.log_start = *inner.segments.keys().next().unwrap();
                let start = inner.log_start;
                inner.epochs.truncate_from_start(start);
                inner.generation += 1;
            }
            removed
        };
        let log_start = self.log_start_offset();
        let mut out = RetentionOutcome {
            log_start_offset: log_start,
            ..Default::default()
        };
        if removed.is_empty() {
            return Ok(out);
        }
        self.cache.remove_below(log_start);
        for seg in &removed {
            out.deleted_segments += 1;
            out.deleted_bytes += seg.size;
            delete_segment_files(seg).await?;
        }
        sync_dir(&self.dir)
            .await
            .map_err(|e| StorageError::io(&self.dir, e))?;
        tracing::info!(log = %self.dir.display(), segments = out.deleted_segments,
            bytes = out.deleted_bytes, log_start, "retention deleted segments");
        Ok(out)
    }

    /// Removes every batch whose last offset is >= `offset`, so the log
    /// ends at `offset` when it is a batch boundary (followers truncate to
    /// one), and the epochs of the history that begin at or after the new
    /// end. Returns the new log end offset. Truncating at or below the log
    /// start empties the log and restarts it at `offset`.
    pub async fn truncate_to(&self, offset: i64) -> Result<i64> {
        self.cut(offset, false).await
    }

    /// Empties the log and restarts it at `offset`, wherever that is (a
    /// follower whose whole log lies below its leader's log start: Kafka's
    /// truncateFullyAndStartAt). Returns the new log end, `offset`.
    pub async fn restart_at(&self, offset: i64) -> Result<i64> {
        self.cut(offset, true).await
    }

    async fn cut(&self, offset: i64, restart: bool) -> Result<i64> {
        let _s = self.sync_lock.acquire_permit(1).await.map_err(closed)?;
        let _a = self.append_lock.acquire_permit(1).await.map_err(closed)?;
        self.check_writable()?;
        let offset = offset.max(0);
        if !restart && offset >= self.log_end_offset() {
            // No batch to remove, but epochs that begin at the log end
            // hold none either (a leader recorded its epoch and appended
            // nothing): a follower cutting back to its end drops them.
            let end = self.log_end_offset();
            self.change_epochs(|h| {
                h.truncate_from_end(end);
                Ok(())
            })
            .await?;
            return Ok(end);
        }
        self.issue_write(false).await?;
        self.drain_all().await?;
        // The flusher writes the active segment's index files under this
        // lock: a cut deletes or rebuilds them, so none may be opened
        // while it runs (an open racing the unlink failed inside the
        // runtime, which panicked).
        let _i = self.index_lock.acquire_permit(1).await.map_err(closed)?;
        let cfg = self.config();
        let window = cfg.read_ahead_bytes.max(cfg.read_chunk_bytes);
        let (interval, chunk) = (cfg.index_interval_bytes, cfg.read_chunk_bytes);
        let log_start = self.log_start_offset();
        let restart = restart || offset <= log_start;
        // Later segments go first, so a crash part-way never leaves data
        // above the cut with a gap below it. The map is never left empty
        // while this awaits (readers take its last segment as the active
        // one): on a restart the segments stay in it, their files unlinked
        // but open, until the new segment replaces them all at once below;
        // on a cut, the segment holding the cut stays.
        let doomed: Vec<Segment> = {
            let mut inner = self.inner.borrow_mut();
            inner.generation += 1;
            if restart {
                Vec::new()
            } else {
                inner.segments.split_off(&offset).into_values().collect()
            }
        };
        let doomed_files: Vec<[PathBuf; 3]> = if restart {
            self.inner
                .borrow()
                .segments
                .values()
                .map(segment_files)
                .collect()
        } else {
            doomed.iter().map(segment_files).collect()
        };
        for files in doomed_files.iter().rev() {
            delete_files(files).await?;
        }
        sync_dir(&self.dir)
            .await
            .map_err(|e| StorageError::io(&self.dir, e))?;
        let new_active = if restart {
            // The new segment's name is the log's start from now on: its
            // directory entry must be durable, or a power cut restarts the
            // log at offset 0. (A cut between the deletions above and this
            // sync still can: the window of one directory sync.)
            let seg = Segment::create(&self.dir, offset, interval).await?;
            sync_dir(&self.dir)
                .await
                .map_err(|e| StorageError::io(&self.dir, e))?;
            seg
        } else {
            let (file, path, base, size, rel, pos) = {
                let inner = self.inner.borrow();
                let a = inner.active();
                let (rel, pos) = a.index.lookup((offset - a.base) as u32);
                (
                    a.file.clone(),
                    a.log_path.clone(),
                    a.base,
                    a.size,
                    rel,
                    u64::from(pos),
                )
            };
            let mut cut = None;
            let mut find = |p: u64, h: &BatchHeader, _len: u64| {
                if cut.is_none() && h.last_offset() >= offset {
                    cut = Some(p);
                }
            };
            let s = scan(
                &file,
                pos,
                size,
                base + i64::from(rel),
                window,
                chunk,
                &mut find,
            )
            .await?;
            if pos > 0 && !s.first_ok {
                scan(&file, 0, size, base, window, chunk, &mut find).await?;
            }
            let cut = cut.unwrap_or(size);
            file.truncate(cut)
                .await
                .map_err(|e| self.poison(&path, e))?;
            file.fdatasync().await.map_err(|e| self.poison(&path, e))?;
            // Replaced by the recovered one below (same base).
            Segment::recover_active(&self.dir, base, interval, window, chunk)
                .await?
                .0
        };
        let tail = load_tail(&new_active, cfg.tail_buffer_bytes).await?;
        let new_end = new_active.next_offset;
        {
            let mut inner = self.inner.borrow_mut();
            if restart {
                inner.segments.clear();
            }
            inner.segments.insert(new_active.base, new_active);
            inner.log_start = *inner.segments.keys().next().unwrap();
            inner.next_offset = new_end;
            // A restarted log is all durable: its one empty segment's
            // directory entry was synced.
            inner.durable = if restart {
                new_end
            } else {
                inner.durable.min(new_end)
            };
            inner.high_watermark = inner.high_watermark.min(new_end).max(inner.log_start);
            inner.tail = tail;
            inner.unwritten.clear();
            inner.last_write_partial = false;
            inner.tail_dirty = false;
            inner.synced_bytes = inner.appended_bytes;
            inner.oldest_unsynced_ms = None;
            inner.generation += 1;
        }
        self.cache.remove_from(new_end);
        if restart {
            self.cache.remove_below(new_end);
        }
        self.cache.set_pinned_from(new_end);
        let log_start = self.log_start_offset();
        self.change_epochs(|h| {
            h.truncate_from_end(new_end);
            h.truncate_from_start(log_start);
            Ok(())
        })
        .await?;
        Ok(new_end)
    }

    /// Writes and syncs everything, completes the indexes and closes the
    /// log. Later calls fail with `Closed`.
    pub async fn close(&self) -> Result<()> {
        let _s = self.sync_lock.acquire_permit(1).await.map_err(closed)?;
        let _a = self.append_lock.acquire_permit(1).await.map_err(closed)?;
        if self.closed.replace(true) {
            return Ok(());
        }
        if self.poisoned.get() {
            let _ = self.drain_all().await;
            return Err(StorageError::Poisoned(self.dir.clone()));
        }
        self.issue_write(false).await?;
        self.drain_all().await?;
        let (file, path, size) = {
            let inner = self.inner.borrow();
            let a = inner.active();
            (a.file.clone(), a.log_path.clone(), a.size)
        };
        file.truncate(size)
            .await
            .map_err(|e| self.poison(&path, e))?;
        file.fdatasync().await.map_err(|e| self.poison(&path, e))?;
        {
            let mut inner = self.inner.borrow_mut();
            inner.durable = inner.next_offset;
        }
        let _i = self.index_lock.acquire_permit(1).await.map_err(closed)?;
        let (delta, mark) = {
            let mut inner = self.inner.borrow_mut();
            let a = inner.active_mut();
            (a.take_index_delta(), a.clean_mark())
        };
        delta.write(true).await?;
        // Everything is on disk: the next open may trust the mark instead
        // of reading the tail.
        let mark = mark.encode();
        let path = self.dir.join(CLEAN_SHUTDOWN_FILE);
        write_small_file(&path, &mark, 0, mark.len(), true)
            .await
            .map_err(|e| StorageError::io(&path, e))?;
        sync_dir(&self.dir)
            .await
            .map_err(|e| StorageError::io(&self.dir, e))
    }
}

impl PartitionLog {
    /// Fault hook for crash tests: stops using the log as a killed process
    /// would. Writes already submitted to the kernel are allowed to finish
    /// (as they would after a kill), but the unwritten tail is dropped and
    /// nothing is synced or indexed.
    pub async fn simulate_crash(&self) {
        self.closed.set(true);
        let _ = self.drain_all().await;
    }
}

fn segment_files(seg: &Segment) -> [PathBuf; 3] {
    [
        seg.log_path.clone(),
        seg.index_path.clone(),
        seg.time_index_path.clone(),
    ]
}

async fn delete_files(files: &[PathBuf; 3]) -> Result<()> {
    for p in files {
        remove_file(p).await.map_err(|e| StorageError::io(p, e))?;
    }
    Ok(())
}

async fn delete_segment_files(seg: &Segment) -> Result<()> {
    delete_files(&segment_files(seg)).await
}

/// Why a disk read found nothing to serve.
enum DiskRead {
    /// The start position does not hold the start of the expected batch
    /// (an index entry that is wrong): reading from earlier may work.
    NotAtBatch(String),
    Failed(StorageError),
}

impl From<StorageError> for DiskRead {
    fn from(e: StorageError) -> Self {
        DiskRead::Failed(e)
    }
}

/// Reads batches from disk starting at `pos` (where the batch `expected`
/// starts) until one holding `offset` is found, then up to `window` more
/// bytes. Every batch is checked (length, CRC, contiguous offsets).
#[allow(clippy::too_many_arguments)]
async fn read_disk(
    file: &DirectFile,
    path: &Path,
    mut pos: u64,
    end: u64,
    mut expected: i64,
    offset: i64,
    window: usize,
    chunk: usize,
) -> std::result::Result<Vec<Batch>, DiskRead> {
    let mut out: Vec<Batch> = Vec::new();
    let io = |e| StorageError::io(path, e);
    let first_expected = expected;
    let start = pos;
    loop {
        if pos >= end {
            break;
        }
        let want = (window as u64).min(end - pos) as usize;
        let buf = file.read_range(pos, want, chunk).await.map_err(io)?;
        let mut at = 0usize;
        let mut advanced = false;
        while at < buf.len() {
            match check_stored(&buf[at..], Some(expected)) {
                Ok((h, len)) => {
                    if h.last_offset() >= offset {
                        out.push(Batch::from_stored(buf.slice(at..at + len), &h));
                    }
                    expected = h.last_offset() + 1;
                    at += len;
                    advanced = true;
                }
                Err(reason) => {
                    let at_entry = pos == start && at == 0 && expected == first_expected;
                    let looks_like_start = BatchHeader::parse(&buf[at..])
                        .is_some_and(|h| h.magic == 2 && h.base_offset == expected);
                    if at_entry && !looks_like_start {
                        return Err(DiskRead::NotAtBatch(reason));
                    }
                    match cut_batch_bytes(&buf[at..]) {
                        Some(l) if pos + (at + l) as u64 <= end && out.is_empty() => {
                            // Cut by the window: read it (and on) again.
                            if at == 0 {
                                let big = file.read_range(pos, l, chunk).await.map_err(io)?;
                                let (h, len) = check_stored(&big, Some(expected)).map_err(|r| {
                                    StorageError::CorruptData {
                                        path: path.to_path_buf(),
                                        position: pos,
                                        reason: r,
                                    }
                                })?;
                                if h.last_offset() >= offset {
                                    out.push(Batch::from_stored(big, &h));
                                }
                                expected = h.last_offset() + 1;
                                at = len;
                                advanced = true;
                            }
                            break;
                        }
                        _ if !out.is_empty() => return Ok(out),
                        _ => {
                            return Err(DiskRead::Failed(StorageError::CorruptData {
                                path: path.to_path_buf(),
                                position: pos + at as u64,
                                reason,
                            }))
                        }
                    }
                }
            }
        }
        if !out.is_empty() || !advanced {
            if !advanced && out.is_empty() {
                return Err(DiskRead::Failed(StorageError::CorruptData {
                    path: path.to_path_buf(),
                    position: pos,
                    reason: "no batch could be read".into(),
                }));
            }
            break;
        }
        pos += at as u64;
    }
    Ok(out)
}

/// Syncs appends nobody waited on once they are `flush_interval_ms` old:
/// runs while the log has unsynced appends (started by the append that
/// finds none scheduled), so an idle log has no timer.
/// Whether a batch whose first offset is `next_offset` and whose last is
/// `last_offset_delta` further fits in the segment based at `base`: every
/// offset of a segment, and the offset after its last batch (where the
/// next segment starts, which its indexes record), must be within 2^31-1
/// of its base, as relative offsets are 32-bit.
fn offsets_fit(base: i64, next_offset: i64, last_offset_delta: i32) -> bool {
    next_offset - base + i64::from(last_offset_delta) < i64::from(i32::MAX)
}

async fn age_flush(weak: Weak<PartitionLog>) {
    loop {
        let wait = {
            let Some(log) = weak.upgrade() else {
                return;
            };
            let oldest = log.inner.borrow().oldest_unsynced_ms;
            match oldest {
                Some(t) if !log.closed.get() && !log.poisoned.get() => {
                    let interval = log.cfg.borrow().flush_interval_ms.max(1) as i64;
                    let wait = t + interval - log.clock.now_ms();
                    if wait <= 0 {
                        if log.sync().await.is_err() {
                            log.age_flush_scheduled.set(false);
                            return;
                        }
                        continue;
                    }
                    wait as u64
                }
                _ => {
                    log.age_flush_scheduled.set(false);
                    return;
                }
            }
        };
        glommio::timer::sleep(Duration::from_millis(wait)).await;
    }
}

/// Marks the waiter making a sync; whenever it stops (done, failed or
/// dropped), the others are woken to look again.
struct Syncer<'a>(&'a PartitionLog);

impl<'a> Syncer<'a> {
    fn start(log: &'a PartitionLog) -> Self {
        log.syncing.set(true);
        Syncer(log)
    }
}

impl Drop for Syncer<'_> {
    fn drop(&mut self) {
        self.0.syncing.set(false);
        self.0.synced.notify_all();
    }
}

/// Writes the active segment's new index entries every half second, until
/// the log is dropped or closed.
async fn flusher(weak: Weak<PartitionLog>) {
    loop {
        glommio::timer::sleep(INDEX_PERSIST_INTERVAL).await;
        let Some(log) = weak.upgrade() else {
            return;
        };
        if log.closed.get() || log.poisoned.get() {
            return;
        }
        let _ = log.persist_active_index().await;
    }
}

#[cfg(test)]
mod tests {
    use super::offsets_fit;

    // A batch fits a segment only when the offset after it stays within
    // 2^31-1 of the segment's base: the old check let the segment reach a
    // relative next offset of 2^31, and the next roll's index entry for it
    // tripped the segment's assertion (a shard panic).
    #[test]
    fn a_segment_rolls_before_its_relative_offsets_overflow() {
        let max = i64::from(i32::MAX);
        assert!(offsets_fit(0, 0, i32::MAX - 1));
        assert!(!offsets_fit(0, 0, i32::MAX));
        assert!(offsets_fit(100, 100 + max - 1, 0));
        assert!(!offsets_fit(100, 100 + max, 0));
        assert!(!offsets_fit(100, 100 + max - 1, 1));
    }
}
