//! Committed offsets of the groups one shard coordinates, kept durably in
//! an internal log of that shard (`<data-dir>/__sluice-offsets.<shard>`, a
//! name no topic directory can have). Each OffsetCommit appends one batch
//! of records (key: group, topic, partition; value: offset, leader epoch,
//! commit time, metadata; an empty value deletes) and is answered only
//! once the batch is durable. On start the log is replayed into memory.

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use bytes::{BufMut, Bytes};
use sluice_storage::batch::{self, build};
use sluice_storage::{LogConfig, PartitionLog, ShardCache, StorageError, SystemClock};

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_time_ms: i64,
}

/// (group, topic, partition)
pub type OffsetKey = (String, String, i32);

pub struct OffsetStore {
    log: Rc<PartitionLog>,
    offsets: std::cell::RefCell<BTreeMap<OffsetKey, Committed>>,
}

fn encode_key(k: &OffsetKey) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + k.0.len() + k.1.len());
    b.put_u16(k.0.len() as u16);
    b.extend_from_slice(k.0.as_bytes());
    b.put_u16(k.1.len() as u16);
    b.extend_from_slice(k.1.as_bytes());
    b.put_i32(k.2);
    b
}

fn decode_key(b: &[u8]) -> Option<OffsetKey> {
    let take_str = |b: &[u8], at: &mut usize| -> Option<String> {
        let n = u16::from_be_bytes(b.get(*at..*at + 2)?.try_into().ok()?) as usize;
        let s = std::str::from_utf8(b.get(*at + 2..*at + 2 + n)?)
            .ok()?
            .to_string();
        *at += 2 + n;
        Some(s)
    };
    let mut at = 0;
    let g = take_str(b, &mut at)?;
    let t = take_str(b, &mut at)?;
    let p = i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?);
    Some((g, t, p))
}

fn encode_value(c: &Committed) -> Vec<u8> {
    let mut b = Vec::with_capacity(32);
    b.put_u8(0); // format version
    b.put_i64(c.offset);
    b.put_i32(c.leader_epoch);
    b.put_i64(c.commit_time_ms);
    match &c.metadata {
        Some(m) => {
            b.put_i32(m.len() as i32);
            b.extend_from_slice(m.as_bytes());
        }
        None => b.put_i32(-1),
    }
    b
}

fn decode_value(b: &[u8]) -> Option<Committed> {
    if b.first() != Some(&0) || b.len() < 25 {
        return None;
    }
    let i64_at = |at: usize| i64::from_be_bytes(b[at..at + 8].try_into().unwrap());
    let n = i32::from_be_bytes(b[21..25].try_into().unwrap());
    let metadata = if n < 0 {
        None
    } else {
        Some(String::from_utf8_lossy(b.get(25..25 + n as usize)?).into_owned())
    };
    Some(Committed {
        offset: i64_at(1),
        leader_epoch: i32::from_be_bytes(b[9..13].try_into().unwrap()),
        commit_time_ms: i64_at(13),
        metadata,
    })
}

impl OffsetStore {
    /// Opens (recovering) the log and replays it.
    pub async fn open(dir: &Path, cache: &Rc<ShardCache>) -> Result<OffsetStore, StorageError> {
        let log =
            PartitionLog::open(dir, LogConfig::default(), cache, Rc::new(SystemClock)).await?;
        let mut offsets = BTreeMap::new();
        let mut at = log.log_start_offset();
        let end = log.log_end_offset();
        while at < end {
            let batches = log
                .read(at, sluice_tuning::limits::READ_AHEAD_BYTES_DEFAULT)
                .await?;
            if batches.is_empty() {
                break;
            }
            for b in batches {
                let h = b.header();
                batch::read_records(b.body(), h.record_count, |k, v| {
                    let Some(key) = k.and_then(decode_key) else {
                        return;
                    };
                    match decode_value(v) {
                        Some(c) => {
                            offsets.insert(key, c);
                        }
                        None => {
                            offsets.remove(&key);
                        }
                    }
                })?;
                at = at.max(b.next_offset());
            }
        }
        log.set_high_watermark(end);
        Ok(OffsetStore {
            log,
            offsets: std::cell::RefCell::new(offsets),
        })
    }

    /// Stores commits (`None` deletes) durably, then makes them visible.
    pub async fn commit(
        &self,
        items: Vec<(OffsetKey, Option<Committed>)>,
    ) -> Result<(), StorageError> {
        if items.is_empty() {
            return Ok(());
        }
        let keys: Vec<Vec<u8>> = items.iter().map(|(k, _)| encode_key(k)).collect();
        let values: Vec<Vec<u8>> = items
            .iter()
            .map(|(_, c)| c.as_ref().map(encode_value).unwrap_or_default())
            .collect();
        let now = now_ms();
        let records: Vec<build::Record<'_>> = keys
            .iter()
            .zip(&values)
            .map(|(k, v)| build::Record {
                key: Some(k),
                value: v,
                timestamp: now,
            })
            .collect();
        let batch: Bytes = build::batch(&records);
        let info = self.log.append(batch).await?;
        self.log.wait_durable(info.last_offset).await?;
        self.log.set_high_watermark(info.last_offset + 1);
        let mut offsets = self.offsets.borrow_mut();
        for (k, c) in items {
            match c {
                Some(c) => {
                    offsets.insert(k, c);
                }
                None => {
                    offsets.remove(&k);
                }
            }
        }
        Ok(())
    }

    pub fn get(&self, key: &OffsetKey) -> Option<Committed> {
        self.offsets.borrow().get(key).cloned()
    }

    /// Every committed offset of a group.
    pub fn of_group(&self, group: &str) -> Vec<(String, i32, Committed)> {
        self.offsets
            .borrow()
            .iter()
            .filter(|((g, _, _), _)| g == group)
            .map(|((_, t, p), c)| (t.clone(), *p, c.clone()))
            .collect()
    }

    /// Groups that have committed offsets.
    pub fn groups(&self) -> Vec<String> {
        let mut g: Vec<String> = self.offsets.borrow().keys().map(|k| k.0.clone()).collect();
        g.dedup();
        g
    }

    pub async fn close(&self) -> Result<(), StorageError> {
        self.log.close().await
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys and values encode and decode to the same thing.
    #[test]
    fn records_round_trip() {
        let k = ("group-1".to_string(), "orders".to_string(), 7);
        assert_eq!(decode_key(&encode_key(&k)), Some(k));
        for metadata in [None, Some("m".to_string()), Some(String::new())] {
            let c = Committed {
                offset: 42,
                leader_epoch: 3,
                metadata,
                commit_time_ms: 1_700_000_000_000,
            };
            assert_eq!(decode_value(&encode_value(&c)), Some(c));
        }
        assert_eq!(decode_value(&[]), None);
        assert_eq!(decode_key(&[0, 9, b'x']), None);
    }
}
