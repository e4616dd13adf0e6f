//! One segment of a partition log: `<base>.log` plus its two sparse
//! indexes, and the recovery of a segment from what is on disk.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::batch::{check_stored, BatchHeader, HEADER_BYTES, LOG_OVERHEAD_BYTES};
use crate::error::{Result, StorageError};
use crate::file::{read_small_file, remove_file, segment_paths, write_small_file, DirectFile};
use crate::index::{OffsetIndex, TimeIndex, OFFSET_ENTRY_BYTES, TIME_ENTRY_BYTES};

/// What opening a segment found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Bytes of the segment read to validate it.
    pub scanned_bytes: u64,
    /// Bytes cut from the end because they were not whole, valid batches
    /// (zero padding of the last page is not counted).
    pub truncated_bytes: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub stop_reason: Option<String>,
    /// The indexes were missing or inconsistent and were rebuilt by a scan.
    pub rebuilt_index: bool,
}

/// A segment's log file and its size.
async fn open_segment_file(dir: &Path, base: i64, writable: bool) -> Result<(DirectFile, u64)> {
    let (log_path, ..) = segment_paths(dir, base);
    let file = DirectFile::open(&log_path, writable)
        .await
        .map_err(|e| StorageError::io(&log_path, e))?;
    let size = file
        .size()
        .await
        .map_err(|e| StorageError::io(&log_path, e))?;
    Ok((file, size))
}

/// A cleanly closed log's active segment, as its clean-shutdown file
/// holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CleanMark {
    pub base: i64,
    pub size: u64,
    pub next_offset: i64,
    pub max_timestamp: i64,
    pub bytes_since_index: u64,
}

const CLEAN_MAGIC: &[u8; 4] = b"SLCM";
const CLEAN_BYTES: usize = 4 + 5 * 8 + 4;

impl CleanMark {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(CLEAN_BYTES);
        b.extend_from_slice(CLEAN_MAGIC);
        b.extend_from_slice(&self.base.to_be_bytes());
        b.extend_from_slice(&self.size.to_be_bytes());
        b.extend_from_slice(&self.next_offset.to_be_bytes());
        b.extend_from_slice(&self.max_timestamp.to_be_bytes());
        b.extend_from_slice(&self.bytes_since_index.to_be_bytes());
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        b
    }

    /// `None` for anything but a whole, CRC-valid mark.
    pub fn decode(b: &[u8]) -> Option<CleanMark> {
        if b.len() != CLEAN_BYTES || &b[..4] != CLEAN_MAGIC {
            return None;
        }
        let (body, crc) = b.split_at(CLEAN_BYTES - 4);
        if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
            return None;
        }
        let at = |i: usize| -> [u8; 8] { body[4 + 8 * i..12 + 8 * i].try_into().unwrap() };
        Some(CleanMark {
            base: i64::from_be_bytes(at(0)),
            size: u64::from_be_bytes(at(1)),
            next_offset: i64::from_be_bytes(at(2)),
            max_timestamp: i64::from_be_bytes(at(3)),
            bytes_since_index: u64::from_be_bytes(at(4)),
        })
    }
}

pub(crate) struct Segment {
    pub base: i64,
    pub log_path: PathBuf,
    pub index_path: PathBuf,
    pub time_index_path: PathBuf,
    pub file: DirectFile,
    /// Logical size: every appended byte, whether or not it is written yet.
    pub size: u64,
    /// Bytes whose writes completed: the range a disk read may cover.
    pub written: u64,
    pub next_offset: i64,
    /// Largest batch max timestamp in the segment; -1 when empty.
    pub max_timestamp: i64,
    /// Clock time of the first append since the segment was created or
    /// opened, for `segment.ms`.
    pub first_append_ms: Option<i64>,
    pub index: OffsetIndex,
    pub time_index: TimeIndex,
    /// Entries of each index already written to its file.
    pub persisted: (usize, usize),
    bytes_since_index: u64,
    /// `index.interval.bytes` of the log.
    interval: u64,
}

impl Segment {
    pub async fn create(dir: &Path, base: i64, interval: u32) -> Result<Segment> {
        let (log_path, index_path, time_index_path) = segment_paths(dir, base);
        let file = DirectFile::open(&log_path, true)
            .await
            .map_err(|e| StorageError::io(&log_path, e))?;
        // Leftover files of the same name (from a truncation that did not
        // finish) hold nothing we want.
        file.truncate(0)
            .await
            .map_err(|e| StorageError::io(&log_path, e))?;
        for p in [&index_path, &time_index_path] {
            remove_file(p).await.map_err(|e| StorageError::io(p, e))?;
        }
        Ok(Segment::empty(dir, base, file, interval))
    }

    fn rel(&self, offset: i64) -> u32 {
        let rel = offset - self.base;
        assert!(
            (0..=i32::MAX as i64).contains(&rel),
            "offset {offset} outside segment {}",
            self.base
        );
        rel as u32
    }

    /// Records a batch placed at `pos` in the indexes, by the same rule
    /// whether it is being appended or replayed by recovery.
    pub fn note_batch(
        &mut self,
        pos: u64,
        base_offset: i64,
        next_offset: i64,
        len: u64,
        max_ts: i64,
        replay_first: bool,
    ) {
        assert_eq!(
            base_offset, self.next_offset,
            "batches in a segment are contiguous"
        );
        assert!(pos < u32::MAX as u64, "segment position fits the index");
        if !replay_first && self.bytes_since_index >= self.interval {
            let rel = self.rel(base_offset);
            self.time_index.maybe_push(self.max_timestamp, rel);
            self.index.push(rel, pos as u32);
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += len;
        self.next_offset = next_offset;
        self.max_timestamp = self.max_timestamp.max(max_ts);
    }

    /// Ends the time index with (max timestamp, next offset), the mark by
    /// which a sealed segment's indexes are known complete.
    pub fn seal_time_index(&mut self) {
        let rel = self.rel(self.next_offset);
        let te = &mut self.time_index.entries;
        match te.last() {
            Some(&(_, r)) if r >= rel => {}
            Some(&(t, _)) if t > self.max_timestamp => {}
            _ if rel > 0 => te.push((self.max_timestamp, rel)),
            _ => {}
        }
    }

    pub fn is_sealed_mark_present(&self) -> bool {
        self.time_index.entries.last().is_some_and(|&(t, r)| {
            i64::from(r) == self.next_offset - self.base && t == self.max_timestamp
        })
    }

    /// The index bytes not yet on disk, as (time index bytes, from, offset
    /// index bytes, from) for [`write_indexes`], and marks them persisted.
    pub fn take_index_delta(&mut self) -> IndexDelta {
        self.take_index_delta_upto(self.index.entries.len(), self.time_index.entries.len())
    }

    /// As [`Segment::take_index_delta`], for the entries of batches below
    /// `durable` alone. Recovery trusts the last entry on disk and checks
    /// only the batches after it, so an entry must never reach the disk
    /// ahead of the data before it: a power cut could keep the entry and
    /// lose that data, leaving a hole that recovery would not see.
    pub fn take_durable_index_delta(&mut self, durable: i64) -> IndexDelta {
        let below = |rel: u32| self.base + i64::from(rel) < durable;
        let n_index = self.index.entries.iter().take_while(|e| below(e.0)).count();
        let n_time = self
            .time_index
            .entries
            .iter()
            .take_while(|e| below(e.1))
            .count();
        self.take_index_delta_upto(n_index, n_time)
    }

    /// The delta of the first `n_index` offset and `n_time` time entries.
    fn take_index_delta_upto(&mut self, n_index: usize, n_time: usize) -> IndexDelta {
        let (po, pt) = self.persisted;
        let rewrite = po > n_index || pt > n_time;
        let (fo, ft) = if rewrite { (0, 0) } else { (po, pt) };
        let (index, index_pos) = page_tail(fo, n_index, OFFSET_ENTRY_BYTES, |k| {
            self.index.encode_from(k)
        });
        let (time_index, time_index_pos) = page_tail(ft, n_time, TIME_ENTRY_BYTES, |k| {
            self.time_index.encode_from(k)
        });
        let delta = IndexDelta {
            index_path: self.index_path.clone(),
            time_index_path: self.time_index_path.clone(),
            index,
            index_pos,
            index_len: n_index * OFFSET_ENTRY_BYTES,
            time_index,
            time_index_pos,
            time_index_len: n_time * TIME_ENTRY_BYTES,
            rewrite,
        };
        self.persisted = (n_index, n_time);
        delta
    }
}

/// The encoded entries from the file page that holds entry `first` up to
/// entry `end`, and that page's position in the file.
fn page_tail(
    first: usize,
    end: usize,
    entry_bytes: usize,
    encode_from: impl Fn(usize) -> Vec<u8>,
) -> (Vec<u8>, usize) {
    let page = crate::file::align_down((first * entry_bytes) as u64) as usize;
    let k = page / entry_bytes;
    let enc = encode_from(k);
    let stop = (end * entry_bytes)
        .saturating_sub(k * entry_bytes)
        .min(enc.len());
    let from = (page - k * entry_bytes).min(stop);
    (enc[from..stop].to_vec(), page)
}

/// Index bytes to write; produced without awaiting, written after.
pub(crate) struct IndexDelta {
    index_path: PathBuf,
    time_index_path: PathBuf,
    index: Vec<u8>,
    index_pos: usize,
    index_len: usize,
    time_index: Vec<u8>,
    time_index_pos: usize,
    time_index_len: usize,
    rewrite: bool,
}

impl IndexDelta {
    /// Writes the time index first, then the offset index: a crash between
    /// the two leaves time entries the offset index lacks, which recovery
    /// drops, never the reverse (see `reconcile`). With `exact` both files
    /// are cut to length and synced.
    pub async fn write(&self, exact: bool) -> Result<()> {
        let exact = exact || self.rewrite;
        let (t, tp, tl) = (&self.time_index, self.time_index_pos, self.time_index_len);
        write_small_file(&self.time_index_path, t, tp, tl, exact)
            .await
            .map_err(|e| StorageError::io(&self.time_index_path, e))?;
        write_small_file(
            &self.index_path,
            &self.index,
            self.index_pos,
            self.index_len,
            exact,
        )
        .await
        .map_err(|e| StorageError::io(&self.index_path, e))
    }
}

/// Makes the two indexes agree: time entries past the last offset entry are
/// dropped; if a time entry names a batch the offset index does not, or the
/// first offset entry has no time entry, both are dropped (and rebuilt).
fn reconcile(index: &mut OffsetIndex, time: &mut TimeIndex) -> bool {
    let last_rel = index.entries.last().map(|&(r, _)| r);
    match last_rel {
        None => time.entries.clear(),
        Some(r) => time.truncate_from_rel(r + 1),
    }
    let consistent = time
        .entries
        .iter()
        .all(|&(_, r)| index.position_of(r).is_some())
        && match (index.entries.first(), time.entries.first()) {
            (Some(&(r0, _)), Some(&(_, t0))) => r0 == t0,
            (None, None) => true,
            _ => false,
        };
    if !consistent {
        index.entries.clear();
        time.entries.clear();
    }
    consistent
}

async fn load_indexes(seg: &Segment, file_size: u64) -> (OffsetIndex, TimeIndex) {
    let idx = read_small_file(&seg.index_path).await.ok().flatten();
    let tidx = read_small_file(&seg.time_index_path).await.ok().flatten();
    let index = idx
        .map(|b| OffsetIndex::decode(&b, file_size))
        .unwrap_or_default();
    let time = tidx.map(|b| TimeIndex::decode(&b)).unwrap_or_default();
    (index, time)
}

/// When `rest` ends inside a batch (its header, or its body), the bytes
/// needed to hold that batch whole; `None` when `rest` is not a cut batch.
pub(crate) fn cut_batch_bytes(rest: &[u8]) -> Option<usize> {
    match BatchHeader::parse(rest) {
        None => Some(HEADER_BYTES),
        Some(h) => h.total_bytes().filter(|&l| {
            l > rest.len() && (HEADER_BYTES..=sluice_tuning::limits::BATCH_BYTES_MAX).contains(&l)
        }),
    }
}

/// Outcome of scanning batches from a position.
pub(crate) struct Scan {
    pub valid_end: u64,
    pub stop_reason: Option<String>,
    pub scanned_bytes: u64,
    /// Whether the first batch at the start position was valid.
    pub first_ok: bool,
}

/// Reads batches from `pos` to `end` in windows of `window` bytes, checking
/// each (header, length, CRC, contiguous offsets from `expected`), and calls
/// `visit(pos, header, len)` for each valid one. Stops at the first batch
/// that is not whole and valid.
pub(crate) async fn scan(
    file: &DirectFile,
    mut pos: u64,
    end: u64,
    mut expected: i64,
    window: usize,
    chunk: usize,
    mut visit: impl FnMut(u64, &BatchHeader, u64),
) -> Result<Scan> {
    let mut out = Scan {
        valid_end: pos,
        stop_reason: None,
        scanned_bytes: 0,
        first_ok: false,
    };
    let mut first = true;
    while pos < end {
        let want = (window as u64).min(end - pos) as usize;
        let buf: Bytes = file
            .read_range(pos, want, chunk)
            .await
            .map_err(|e| StorageError::io("segment scan", e))?;
        out.scanned_bytes += buf.len() as u64;
        let mut at = 0usize;
        let mut need_more = None;
        while at < buf.len() {
            let rest = &buf[at..];
            if rest.len() >= LOG_OVERHEAD_BYTES
                && rest[..LOG_OVERHEAD_BYTES].iter().all(|&b| b == 0)
            {
                // Zero padding after the last batch: the clean end.
                out.valid_end = pos + at as u64;
                return Ok(out);
            }
            match check_stored(rest, Some(expected)) {
                Ok((h, len)) => {
                    visit(pos + at as u64, &h, len as u64);
                    if first {
                        out.first_ok = true;
                        first = false;
                    }
                    expected = h.last_offset() + 1;
                    at += len;
                    out.valid_end = pos + at as u64;
                }
                Err(reason) => {
                    // A batch (or header) cut by the window end is read again
                    // whole, unless the file itself ends first.
                    match cut_batch_bytes(rest) {
                        Some(l) if pos + (at + l) as u64 <= end && at > 0 => {
                            need_more = Some(at);
                        }
                        Some(l) if at == 0 && pos + l as u64 <= end => {
                            // One batch larger than the window: read it alone.
                            let big = file
                                .read_range(pos, l, chunk)
                                .await
                                .map_err(|e| StorageError::io("segment scan", e))?;
                            match check_stored(&big, Some(expected)) {
                                Ok((h, len)) => {
                                    visit(pos, &h, len as u64);
                                    out.first_ok |= first;
                                    first = false;
                                    expected = h.last_offset() + 1;
                                    out.valid_end = pos + len as u64;
                                    need_more = Some(len);
                                }
                                Err(r) => {
                                    out.stop_reason = Some(r);
                                    return Ok(out);
                                }
                            }
                        }
                        _ => {
                            out.stop_reason = Some(reason);
                            return Ok(out);
                        }
                    }
                    break;
                }
            }
        }
        match need_more {
            Some(adv) => pos += adv as u64,
            None => {
                pos += buf.len() as u64;
                if buf.len() < want {
                    break;
                }
            }
        }
    }
    Ok(out)
}

impl Segment {
    fn empty(dir: &Path, base: i64, file: DirectFile, interval: u32) -> Segment {
        let (log_path, index_path, time_index_path) = segment_paths(dir, base);
        Segment {
            base,
            log_path,
            index_path,
            time_index_path,
            file,
            size: 0,
            written: 0,
            next_offset: base,
            max_timestamp: -1,
            first_append_ms: None,
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            persisted: (0, 0),
            bytes_since_index: 0,
            interval: u64::from(interval),
        }
    }

    /// What a clean close leaves for the next open of this (active)
    /// segment: its size, next offset, max timestamp and the bytes since
    /// its last index entry, with its indexes complete on disk.
    pub fn clean_mark(&self) -> CleanMark {
        CleanMark {
            base: self.base,
            size: self.size,
            next_offset: self.next_offset,
            max_timestamp: self.max_timestamp,
            bytes_since_index: self.bytes_since_index,
        }
    }

    /// Opens the last segment of a log that was closed cleanly (`mark`
    /// read back from its clean-shutdown file): its indexes and the mark
    /// say everything a scan would, so no batch is read. `None` when the
    /// file does not match the mark or the indexes do not agree (the
    /// caller then recovers the segment by scanning it).
    pub async fn open_clean(
        dir: &Path,
        mark: &CleanMark,
        interval: u32,
    ) -> Result<Option<Segment>> {
        let (file, size) = open_segment_file(dir, mark.base, true).await?;
        let mut seg = Segment::empty(dir, mark.base, file, interval);
        if size != mark.size || mark.next_offset < mark.base {
            return Ok(None);
        }
        let (mut index, mut time) = load_indexes(&seg, size).await;
        let last_rel = index.entries.last().map_or(0, |&(r, _)| i64::from(r));
        if !reconcile(&mut index, &mut time) || mark.base + last_rel > mark.next_offset {
            return Ok(None);
        }
        seg.persisted = (index.entries.len(), time.entries.len());
        seg.index = index;
        seg.time_index = time;
        seg.size = size;
        seg.written = size;
        seg.next_offset = mark.next_offset;
        seg.max_timestamp = mark.max_timestamp;
        seg.bytes_since_index = mark.bytes_since_index;
        Ok(Some(seg))
    }

    /// Opens a segment that has a successor starting at `next_base`. Reads
    /// only its indexes unless they are missing or incomplete, in which case
    /// it scans the segment once to rebuild them.
    pub async fn open_sealed(
        dir: &Path,
        base: i64,
        next_base: i64,
        interval: u32,
        window: usize,
        chunk: usize,
    ) -> Result<(Segment, RecoveryReport)> {
        let (file, size) = open_segment_file(dir, base, false).await?;
        let mut seg = Segment::empty(dir, base, file, interval);
        seg.size = size;
        seg.written = size;
        let (mut index, mut time) = load_indexes(&seg, size).await;
        // The seal entry names the next segment's base, past every batch:
        // keep it out of the reconciliation and put it back.
        let seal_rel = u32::try_from(next_base - base).ok();
        let seal = time
            .entries
            .last()
            .copied()
            .filter(|&(_, r)| Some(r) == seal_rel);
        if seal.is_some() {
            time.entries.pop();
        }
        reconcile(&mut index, &mut time);
        if let Some(e) = seal {
            if time.entries.last().is_none_or(|&(t, _)| t <= e.0) {
                time.entries.push(e);
            }
        }
        seg.index = index;
        seg.time_index = time;
        seg.next_offset = next_base;
        seg.max_timestamp = seg.time_index.last_timestamp().unwrap_or(-1);
        let mut report = RecoveryReport::default();
        if seg.is_sealed_mark_present() && size > 0 {
            seg.persisted = (seg.index.entries.len(), seg.time_index.entries.len());
            return Ok((seg, report));
        }
        // Rebuild both indexes from the data.
        report.rebuilt_index = true;
        seg.index = OffsetIndex::default();
        seg.time_index = TimeIndex::default();
        seg.next_offset = base;
        seg.max_timestamp = -1;
        seg.bytes_since_index = 0;
        let file = seg.file.clone();
        let s = scan(&file, 0, size, base, window, chunk, |pos, h, len| {
            seg.note_batch(
                pos,
                h.base_offset,
                h.last_offset() + 1,
                len,
                h.max_timestamp,
                false,
            )
        })
        .await?;
        report.scanned_bytes = s.scanned_bytes;
        report.stop_reason = s.stop_reason;
        if seg.next_offset != next_base || s.valid_end != size {
            tracing::warn!(
                segment = %seg.log_path.display(),
                "sealed segment is damaged at byte {} (offsets end at {} where {} was expected); \
                 reads of the damaged part will fail",
                s.valid_end, seg.next_offset, next_base
            );
        }
        seg.next_offset = next_base;
        seg.seal_time_index();
        seg.take_index_delta().write(true).await?;
        Ok((seg, report))
    }

    /// Opens the last segment of a log: validates its tail batch by batch
    /// from the last index entry whose batch checks out, cuts a torn or
    /// corrupt tail, and brings the indexes up to date.
    pub async fn recover_active(
        dir: &Path,
        base: i64,
        interval: u32,
        window: usize,
        chunk: usize,
    ) -> Result<(Segment, RecoveryReport)> {
        let (file, file_size) = open_segment_file(dir, base, true).await?;
        let mut seg = Segment::empty(dir, base, file, interval);
        let (mut index, mut time) = load_indexes(&seg, file_size).await;
        let mut report = RecoveryReport {
            rebuilt_index: !reconcile(&mut index, &mut time),
            ..Default::default()
        };
        let loaded_entries = index.entries.len();
        loop {
            let (rel, pos) = index.entries.last().copied().unwrap_or((0, 0));
            seg.index = index.clone();
            seg.time_index = time.clone();
            seg.next_offset = base + i64::from(rel);
            seg.max_timestamp = if rel == 0 {
                -1
            } else {
                time.last_timestamp().unwrap_or(-1)
            };
            seg.bytes_since_index = 0;
            let file = seg.file.clone();
            let s = scan(
                &file,
                u64::from(pos),
                file_size,
                seg.next_offset,
                window,
                chunk,
                |p, h, len| {
                    let first = p == u64::from(pos) && rel > 0;
                    seg.note_batch(
                        p,
                        h.base_offset,
                        h.last_offset() + 1,
                        len,
                        h.max_timestamp,
                        first,
                    )
                },
            )
            .await?;
            report.scanned_bytes += s.scanned_bytes;
            if pos > 0 && !s.first_ok {
                // The entry points at something that is not its batch: the
                // index is damaged there. Drop the entry and try the one before.
                index.truncate_from_rel(rel);
                time.truncate_from_rel(rel);
                report.rebuilt_index = true;
                continue;
            }
            report.stop_reason = s.stop_reason;
            seg.size = s.valid_end;
            seg.written = s.valid_end;
            break;
        }
        if seg.index.entries.len() < loaded_entries {
            report.rebuilt_index = true;
        }
        if seg.size < file_size {
            if report.stop_reason.is_some() {
                report.truncated_bytes = file_size - seg.size;
                tracing::warn!(
                    segment = %seg.log_path.display(),
                    "cutting {} bytes of torn or corrupt tail at byte {}: {}",
                    report.truncated_bytes,
                    seg.size,
                    report.stop_reason.as_deref().unwrap_or("")
                );
            }
            seg.file
                .truncate(seg.size)
                .await
                .map_err(|e| StorageError::io(&seg.log_path, e))?;
        }
        // Everything recovered is durable from here on (the log reports it
        // so, and acknowledges on it), so it is synced now: writes the
        // kernel took before a crash are not on stable storage until then.
        seg.file
            .fdatasync()
            .await
            .map_err(|e| StorageError::io(&seg.log_path, e))?;
        // The files may hold entries beyond what survived; rewrite them.
        seg.persisted = (usize::MAX, usize::MAX);
        seg.take_index_delta().write(true).await?;
        Ok((seg, report))
    }
}
