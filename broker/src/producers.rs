//! Idempotent producers: per partition, each producer id's epoch and its
//! last few batches' sequence ranges, so a retried batch is answered with
//! the offsets it got the first time instead of being written twice, and a
//! gap is refused (OUT_OF_ORDER_SEQUENCE_NUMBER).
//!
//! The table survives restarts: it is checkpointed into the partition
//! directory (`producers.json`, with the log offset it covers) at clean
//! close and every `PRODUCER_CHECKPOINT_INTERVAL_MS` while the partition
//! takes appends, and on open the batches after the checkpoint are replayed
//! (their headers only matter), so the replay covers at most one interval
//! of appends.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};
use sluice_storage::{BatchHeader, PartitionLog};
use sluice_tuning::limits;

const CHECKPOINT_FILE: &str = "producers.json";

/// One remembered batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqBatch {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub log_append_time_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<SeqBatch>,
    /// A logical clock value: when this producer last appended.
    pub last_seen: u64,
}

/// Producers of one partition.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerTable {
    pub producers: HashMap<i64, ProducerEntry>,
    clock: u64,
    /// The table reflects every batch below this offset.
    pub covers_offset: i64,
    #[serde(skip)]
    checkpointed_offset: i64,
}

/// What to do with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqCheck {
    /// Not idempotent, or the next batch in sequence: append it.
    Append,
    /// A retry of a batch already written: answer with its offsets.
    Duplicate(SeqBatch),
    /// Refuse with this error code.
    Refuse(i16),
}

fn next_seq(s: i32) -> i32 {
    if s == i32::MAX {
        0
    } else {
        s + 1
    }
}

fn last_seq(h: &BatchHeader) -> i32 {
    let last = i64::from(h.base_sequence) + i64::from(h.last_offset_delta);
    (last % (i64::from(i32::MAX) + 1)) as i32
}

impl ProducerTable {
    /// Checks a batch's producer id, epoch and sequence.
    pub fn check(&self, h: &BatchHeader) -> SeqCheck {
        if h.producer_id < 0 || h.base_sequence < 0 {
            return SeqCheck::Append;
        }
        let Some(e) = self.producers.get(&h.producer_id) else {
            // A producer this partition has not seen: a first batch starts
            // it; anything later means its state was forgotten (evicted, or
            // its batches are gone), which Kafka answers with
            // UNKNOWN_PRODUCER_ID so the client can reset its sequence.
            return if h.base_sequence == 0 {
                SeqCheck::Append
            } else {
                SeqCheck::Refuse(ResponseError::UnknownProducerId.code())
            };
        };
        if h.producer_epoch < e.epoch {
            return SeqCheck::Refuse(ResponseError::InvalidProducerEpoch.code());
        }
        if h.producer_epoch > e.epoch {
            // A bumped epoch starts its sequence again at 0.
            return if h.base_sequence == 0 {
                SeqCheck::Append
            } else {
                SeqCheck::Refuse(ResponseError::OutOfOrderSequenceNumber.code())
            };
        }
        let last = last_seq(h);
        if let Some(b) = e
            .batches
            .iter()
            .find(|b| b.first_seq == h.base_sequence && b.last_seq == last)
        {
            return SeqCheck::Duplicate(*b);
        }
        match e.batches.back() {
            Some(b) if next_seq(b.last_seq) == h.base_sequence => SeqCheck::Append,
            None if h.base_sequence == 0 => SeqCheck::Append,
            _ => SeqCheck::Refuse(ResponseError::OutOfOrderSequenceNumber.code()),
        }
    }

    /// Records a batch as it is stored (read back, or copied from a
    /// leader): its append time is in its header when the topic stamps
    /// LogAppendTime.
    pub fn record_stored(&mut self, h: &BatchHeader, base_offset: i64) {
        let t = if h.is_log_append_time() {
            h.max_timestamp
        } else {
            -1
        };
        self.record(h, base_offset, t);
    }

    /// Records an appended batch.
    pub fn record(&mut self, h: &BatchHeader, base_offset: i64, log_append_time_ms: i64) {
        let next = base_offset + i64::from(h.last_offset_delta) + 1;
        self.covers_offset = self.covers_offset.max(next);
        if h.producer_id < 0 || h.base_sequence < 0 {
            return;
        }
        self.clock += 1;
        let clock = self.clock;
        let e = self
            .producers
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: h.producer_epoch,
                batches: VecDeque::new(),
                last_seen: clock,
            });
        if h.producer_epoch != e.epoch {
            e.epoch = h.producer_epoch;
            e.batches.clear();
        }
        e.last_seen = clock;
        if e.batches.len() == limits::PRODUCER_BATCHES_REMEMBERED {
            e.batches.pop_front();
        }
        e.batches.push_back(SeqBatch {
            first_seq: h.base_sequence,
            last_seq: last_seq(h),
            base_offset,
            log_append_time_ms,
        });
        if self.producers.len() > limits::PRODUCERS_PER_PARTITION_MAX {
            let oldest = self
                .producers
                .iter()
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(&id, _)| id)
                .expect("not empty");
            self.producers.remove(&oldest);
        }
    }
}

impl ProducerTable {
    /// The log was cut back to `end`. When no remembered batch is at or
    /// past the cut, nothing the table holds came from the records cut
    /// (every idempotent batch recorded leaves at least the latest one
    /// remembered), so it stays as it is, covering up to `end`, and this
    /// returns true. Otherwise the caller rebuilds it from the log.
    pub fn truncate(&mut self, end: i64) -> bool {
        let untouched = self
            .producers
            .values()
            .all(|e| e.batches.iter().all(|b| b.base_offset < end));
        if untouched {
            self.covers_offset = self.covers_offset.min(end);
        }
        untouched
    }
}

fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_FILE)
}

/// Rebuilds a partition's table: the checkpoint, then the batches after it.
pub async fn recover(log: &PartitionLog) -> ProducerTable {
    let path = checkpoint_path(log.dir());
    let loaded = glommio::executor()
        .spawn_blocking(move || std::fs::read(path).ok())
        .await
        .and_then(|b| serde_json::from_slice::<ProducerTable>(&b).ok());
    let start = log.log_start_offset();
    let end = log.log_end_offset();
    let mut loaded_covers = -1;
    let mut table = match loaded {
        // A checkpoint beyond the log's end (the tail was cut after a
        // crash) or before its start is not used.
        Some(t) if t.covers_offset <= end && t.covers_offset >= start => {
            loaded_covers = t.covers_offset;
            t
        }
        _ => ProducerTable {
            covers_offset: start,
            ..Default::default()
        },
    };
    let mut at = table.covers_offset;
    while at < end {
        let batches = match log.read(at, limits::READ_AHEAD_BYTES_DEFAULT).await {
            Ok(b) if !b.is_empty() => b,
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(partition = %log.dir().display(), offset = at, error = %e,
                    "producer state replay stopped early; retried batches from before may be refused");
                break;
            }
        };
        for b in batches {
            let h = b.header();
            if b.next_offset() > at {
                table.record_stored(&h, b.base_offset());
            }
            at = at.max(b.next_offset());
        }
    }
    table.covers_offset = end;
    table.checkpointed_offset = loaded_covers;
    table
}

/// Writes the partition's table if it changed since the last checkpoint.
pub async fn checkpoint(p: &crate::shard::Partition) {
    let table = {
        let t = p.producers.borrow();
        if t.checkpointed_offset == t.covers_offset {
            return;
        }
        t.clone()
    };
    let path = checkpoint_path(p.log.dir());
    let covers = table.covers_offset;
    let r = glommio::executor()
        .spawn_blocking(move || {
            let tmp = path.with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec(&table).expect("serializes"))?;
            std::fs::rename(&tmp, &path)
        })
        .await;
    match r {
        Ok(()) => p.producers.borrow_mut().checkpointed_offset = covers,
        Err(e) => {
            tracing::warn!(partition = %p.log.dir().display(), error = %e, "producer checkpoint failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 0,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: count,
        }
    }

    /// In-order batches append; a retry of any of the last five is a
    /// duplicate with its first offsets; gaps and old epochs are refused.
    #[test]
    fn sequence_rules() {
        let mut t = ProducerTable::default();
        let ooo = ResponseError::OutOfOrderSequenceNumber.code();
        assert_eq!(
            t.check(&header(7, 0, 5, 1)),
            SeqCheck::Refuse(ResponseError::UnknownProducerId.code())
        );
        let mut offset = 0;
        for i in 0..8 {
            let h = header(7, 0, i * 10, 10);
            assert_eq!(t.check(&h), SeqCheck::Append, "batch {i}");
            t.record(&h, offset, -1);
            offset += 10;
        }
        // The last five are remembered, the older ones are not.
        match t.check(&header(7, 0, 50, 10)) {
            SeqCheck::Duplicate(b) => assert_eq!(b.base_offset, 50),
            other => panic!("{other:?}"),
        }
        assert_eq!(t.check(&header(7, 0, 20, 10)), SeqCheck::Refuse(ooo));
        assert_eq!(t.check(&header(7, 0, 90, 10)), SeqCheck::Refuse(ooo));
        assert_eq!(t.check(&header(7, 0, 80, 10)), SeqCheck::Append);
        assert_eq!(
            t.check(&header(7, -1, 80, 10)),
            SeqCheck::Refuse(ResponseError::InvalidProducerEpoch.code())
        );
        assert_eq!(t.check(&header(7, 1, 0, 10)), SeqCheck::Append);
        assert_eq!(t.check(&header(7, 1, 80, 10)), SeqCheck::Refuse(ooo));
        // Non-idempotent batches are never checked.
        assert_eq!(t.check(&header(-1, -1, -1, 3)), SeqCheck::Append);
        assert_eq!(t.covers_offset, 80);
    }

    /// A cut of the log that removes no remembered batch keeps the
    /// table (no replay); one that removes one asks for a rebuild.
    #[test]
    fn truncation_keeps_the_table_unless_it_cuts_a_remembered_batch() {
        let mut t = ProducerTable::default();
        t.record(&header(-1, -1, -1, 10), 0, -1);
        t.record(&header(7, 0, 0, 10), 10, -1);
        t.record(&header(-1, -1, -1, 10), 20, -1);
        assert_eq!(t.covers_offset, 30);
        assert!(t.truncate(25));
        assert_eq!(t.covers_offset, 25);
        assert!(matches!(
            t.check(&header(7, 0, 0, 10)),
            SeqCheck::Duplicate(_)
        ));
        assert!(!t.truncate(10));
    }

    /// Sequences wrap from i32::MAX to 0.
    #[test]
    fn sequence_wraps() {
        let mut t = ProducerTable::default();
        let h = header(1, 0, 0, 1);
        t.record(&h, 0, -1);
        let b = t.producers.get_mut(&1).unwrap().batches.back_mut().unwrap();
        b.first_seq = i32::MAX - 3;
        b.last_seq = i32::MAX;
        assert_eq!(t.check(&header(1, 0, 0, 1)), SeqCheck::Append);
        assert!(matches!(
            t.check(&header(1, 0, i32::MAX - 3, 4)),
            SeqCheck::Duplicate(_)
        ));
        assert_eq!(last_seq(&header(1, 0, i32::MAX, 3)), 1);
    }
}
