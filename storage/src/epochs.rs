//! A partition's leader-epoch history: the offset at which each leader
//! epoch's batches begin (Kafka's leader-epoch-checkpoint, KIP-101).
//!
//! Followers use it to find where their log diverges from a new leader's
//! (the leader answers "epoch E ends at offset X in my log" and the
//! follower truncates there), and it answers OffsetForLeaderEpoch.
//!
//! The history is written ahead of the data: the entry for a new epoch is
//! durable before the first batch of that epoch is appended, so after a
//! crash the file may name epochs whose batches were lost (entries at or
//! past the log end, dropped on open) but never lacks one the log holds.
//! A log without the file holds epoch 0 only: every log a single broker
//! writes, so the file is not written until an entry other than that one
//! appears.
//!
//! The file is text, one header line with the format version, one with
//! the count, then `epoch start_offset` per line, replaced whole (write,
//! fsync, rename, directory fsync) on every change.

use std::path::{Path, PathBuf};

use crate::error::{Result, StorageError};

pub(crate) const FILE_NAME: &str = "leader-epoch-checkpoint";
const VERSION: u32 = 0;
/// More entries than this in one file is damage, not history.
const ENTRIES_MAX: usize = 1 << 20;

/// (epoch, first offset of that epoch), both strictly increasing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochHistory {
    entries: Vec<(i32, i64)>,
    /// The file exists (so every change rewrites it).
    on_disk: bool,
}

impl EpochHistory {
    /// Reads the history of the log in `dir` whose offsets are
    /// [`log_start`, `log_end`), dropping entries the log does not hold.
    pub(crate) async fn load(dir: &Path, log_start: i64, log_end: i64) -> Result<EpochHistory> {
        let path = dir.join(FILE_NAME);
        let p = path.clone();
        let text = glommio::executor()
            .spawn_blocking(move || match std::fs::read(&p) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            })
            .await
            .map_err(|e| StorageError::io(&path, e))?;
        let mut h = match text {
            Some(b) => EpochHistory {
                entries: parse(&b).map_err(|reason| StorageError::CorruptData {
                    path: path.clone(),
                    position: 0,
                    reason,
                })?,
                on_disk: true,
            },
            None if log_end > log_start => EpochHistory {
                entries: vec![(0, log_start)],
                on_disk: false,
            },
            None => EpochHistory::default(),
        };
        h.truncate_from_end(log_end);
        h.truncate_from_start(log_start);
        Ok(h)
    }

    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    pub fn latest(&self) -> Option<(i32, i64)> {
        self.entries.last().copied()
    }

    /// Records that `epoch` begins at `start`, when it is newer than the
    /// latest. Returns whether the history changed. An epoch older than
    /// the latest is an error: a log's epochs only go up.
    pub fn assign(&mut self, epoch: i32, start: i64) -> Result<bool> {
        match self.latest() {
            Some((e, _)) if e == epoch => Ok(false),
            Some((e, s)) if e > epoch || s > start => Err(StorageError::InvalidRecord(format!(
                "leader epoch {epoch} at offset {start} goes back from epoch {e} at offset {s}"
            ))),
            _ => {
                self.entries.push((epoch, start));
                Ok(true)
            }
        }
    }

    /// Drops the entries of epochs that begin at or after `end` (the log
    /// was cut there). Returns whether the history changed.
    pub fn truncate_from_end(&mut self, end: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|&(_, s)| s < end);
        self.entries.len() != before
    }

    /// The log now starts at `start`: entries wholly below it go, the one
    /// it falls in starts there.
    pub fn truncate_from_start(&mut self, start: i64) {
        let keep_from = self.entries.iter().rposition(|&(_, s)| s <= start);
        if let Some(i) = keep_from {
            self.entries.drain(..i);
            self.entries[0].1 = start;
        }
    }

    /// Where `epoch` ends in this log: the largest epoch at most `epoch`
    /// and the start of the epoch after it (the log end for the latest).
    /// An epoch older than the whole history answers with itself and the
    /// history's first offset; one newer than the latest, or no history,
    /// answers (-1, -1), as Kafka's leader-epoch cache does.
    pub fn end_offset_for(&self, epoch: i32, log_end: i64) -> (i32, i64) {
        match self.latest() {
            None => (-1, -1),
            Some((latest, _)) if epoch == latest => (latest, log_end),
            Some((latest, _)) if epoch > latest || epoch < 0 => (-1, -1),
            _ => {
                let next = self.entries.partition_point(|&(e, _)| e <= epoch);
                let start_of_next = self.entries[next].1;
                match next.checked_sub(1) {
                    Some(i) => (self.entries[i].0, start_of_next),
                    None => (epoch, start_of_next),
                }
            }
        }
    }

    /// Whether a change must be written: the file exists, or the history
    /// is not the one a missing file stands for.
    pub(crate) fn must_write(&self) -> bool {
        self.on_disk || self.entries.iter().any(|&(e, _)| e != 0)
    }

    /// Replaces the file with this history, durably.
    pub(crate) async fn write(&mut self, dir: &Path) -> Result<()> {
        let path: PathBuf = dir.join(FILE_NAME);
        let text = render(&self.entries);
        let (p, d) = (path.clone(), dir.to_path_buf());
        glommio::executor()
            .spawn_blocking(move || -> std::io::Result<()> {
                use std::io::Write;
                let tmp = p.with_extension("tmp");
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(text.as_bytes())?;
                f.sync_all()?;
                std::fs::rename(&tmp, &p)?;
                std::fs::File::open(&d)?.sync_all()
            })
            .await
            .map_err(|e| StorageError::io(&path, e))?;
        self.on_disk = true;
        Ok(())
    }
}

fn render(entries: &[(i32, i64)]) -> String {
    let mut s = format!("{VERSION}\n{}\n", entries.len());
    for (e, o) in entries {
        s.push_str(&format!("{e} {o}\n"));
    }
    s
}

fn parse(b: &[u8]) -> std::result::Result<Vec<(i32, i64)>, String> {
    let text = std::str::from_utf8(b).map_err(|_| "not text".to_string())?;
    let mut lines = text.lines();
    let mut number = |what: &str| -> std::result::Result<&str, String> {
        lines
            .next()
            .ok_or_else(|| format!("ends before the {what}"))
    };
    let version: u32 = number("version")?
        .trim()
        .parse()
        .map_err(|_| "bad version line".to_string())?;
    if version != VERSION {
        return Err(format!(
            "format version {version}, this build reads {VERSION}"
        ));
    }
    let count: usize = number("count")?
        .trim()
        .parse()
        .map_err(|_| "bad count line".to_string())?;
    if count > ENTRIES_MAX {
        return Err(format!("{count} entries"));
    }
    let mut entries: Vec<(i32, i64)> = Vec::with_capacity(count);
    for i in 0..count {
        let line = number("entries")?;
        let mut parts = line.split_whitespace();
        let (Some(e), Some(o), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("entry {i} is not `epoch offset`"));
        };
        let (e, o): (i32, i64) = match (e.parse(), o.parse()) {
            (Ok(e), Ok(o)) if e >= 0 && o >= 0 => (e, o),
            _ => return Err(format!("entry {i} is not two non-negative numbers")),
        };
        if let Some(&(pe, po)) = entries.last() {
            if e <= pe || o < po {
                return Err(format!("entry {i} does not follow the one before it"));
            }
        }
        entries.push((e, o));
    }
    if lines.any(|l| !l.trim().is_empty()) {
        return Err("text after the entries".into());
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(entries: &[(i32, i64)]) -> EpochHistory {
        EpochHistory {
            entries: entries.to_vec(),
            on_disk: false,
        }
    }

    #[test]
    fn end_offsets_as_kafka_answers_them() {
        let x = h(&[(1, 0), (3, 100), (4, 250)]);
        assert_eq!(x.end_offset_for(4, 300), (4, 300));
        assert_eq!(x.end_offset_for(3, 300), (3, 250));
        // Epoch 2 never led here: the largest below it, ending where 3 began.
        assert_eq!(x.end_offset_for(2, 300), (1, 100));
        assert_eq!(x.end_offset_for(1, 300), (1, 100));
        assert_eq!(x.end_offset_for(0, 300), (0, 0));
        assert_eq!(x.end_offset_for(5, 300), (-1, -1));
        assert_eq!(x.end_offset_for(-1, 300), (-1, -1));
        assert_eq!(h(&[]).end_offset_for(0, 0), (-1, -1));
    }

    #[test]
    fn assign_only_moves_forward() {
        let mut x = h(&[(1, 0)]);
        assert!(!x.assign(1, 50).unwrap());
        assert!(x.assign(2, 50).unwrap());
        assert!(x.assign(1, 60).is_err());
        assert!(x.assign(3, 40).is_err());
        assert_eq!(x.entries(), &[(1, 0), (2, 50)]);
    }

    #[test]
    fn truncation_from_either_end() {
        let mut x = h(&[(1, 0), (3, 100), (4, 250)]);
        assert!(x.truncate_from_end(250));
        assert_eq!(x.entries(), &[(1, 0), (3, 100)]);
        assert!(!x.truncate_from_end(251));
        x.truncate_from_start(120);
        assert_eq!(x.entries(), &[(3, 120)]);
        x.truncate_from_start(50);
        assert_eq!(x.entries(), &[(3, 120)]);
    }

    #[test]
    fn the_file_round_trips_and_damage_is_refused() {
        let e = vec![(0, 0), (2, 17), (9, 4000)];
        assert_eq!(parse(render(&e).as_bytes()).unwrap(), e);
        assert_eq!(parse(render(&[]).as_bytes()).unwrap(), vec![]);
        for bad in [
            "",
            "1\n0\n",
            "0\n2\n1 0\n",
            "0\n2\n1 0\n1 5\n",
            "0\n2\n2 10\n3 5\n",
            "0\n1\n-1 0\n",
            "0\n1\n1 0 7\n",
            "0\n1\n1 0\ngarbage\n",
            "0\n99999999999\n",
            "\u{0}\u{ff}",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_missing_file_is_written_once_an_epoch_other_than_zero_appears() {
        let mut x = h(&[(0, 0)]);
        assert!(!x.must_write());
        x.assign(1, 10).unwrap();
        assert!(x.must_write());
    }
}
