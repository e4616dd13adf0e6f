//! Produce: append each partition's batches on its owner shard, in request
//! order, then answer: acks=0 never, acks=1 once appended, acks=all once
//! the group commit covering the batches has synced them.
//!
//! Batches travel to the owner as `Bytes` slices of the receive buffer;
//! compressed batches are stored as they arrive. Every batch of a
//! partition is validated before any is appended, so a request never
//! writes part of a partition's data.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_storage::batch;

use super::{Ctx, Reply};
use crate::producers::SeqCheck;
use crate::shard::Shard;

/// One partition's data, on its way to the owner.
struct Item {
    slot: usize,
    topic: String,
    partition: i32,
    records: Bytes,
    /// Where `records` sat in the receive buffer, to prove on the owner
    /// that it arrived without being copied.
    origin: usize,
}

/// One partition's answer.
#[derive(Debug, Clone)]
struct Outcome {
    error: i16,
    message: Option<String>,
    base_offset: i64,
    log_append_time_ms: i64,
    log_start_offset: i64,
}

impl Outcome {
    fn error(e: ResponseError, message: impl Into<String>) -> Outcome {
        Outcome::failed(e.code(), message)
    }
    fn failed(code: i16, message: impl Into<String>) -> Outcome {
        Outcome {
            error: code,
            message: Some(message.into()),
            base_offset: -1,
            log_append_time_ms: -1,
            log_start_offset: -1,
        }
    }
    fn storage(e: sluice_storage::StorageError) -> Outcome {
        Outcome::failed(e.kafka_code(), e.to_string())
    }
}

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: Ctx,
    req: ProduceRequest,
    frame: (usize, usize),
) -> Reply {
    if req.transactional_id.is_some() {
        let n: usize = req.topic_data.iter().map(|t| t.partition_data.len()).sum();
        let out = vec![
            Outcome::error(
                ResponseError::TransactionalIdAuthorizationFailed,
                "transactions are not supported by this broker"
            );
            n
        ];
        return reply(ctx, req.acks, shape(&req), out);
    }
    let meta = shard.meta();
    let layout = shape(&req);
    let mut outcomes: Vec<Option<Outcome>> = vec![None; layout.iter().map(|t| t.1.len()).sum()];
    let mut by_owner: Vec<Vec<Item>> = (0..shard.shards).map(|_| Vec::new()).collect();
    let mut slot = 0;
    for t in req.topic_data {
        let topic = t.name.0.to_string();
        for p in t.partition_data {
            let records = p.records.unwrap_or_default();
            match meta.owner(&topic, p.index) {
                None => {
                    outcomes[slot] = Some(Outcome::error(
                        ResponseError::UnknownTopicOrPartition,
                        format!("no partition {topic}-{}", p.index),
                    ))
                }
                Some(owner) => {
                    let origin = records.as_ptr() as usize;
                    if !records.is_empty() && !(frame.0..frame.1).contains(&origin) {
                        shard.note(|s| s.forwarded_batches_copied += 1);
                    }
                    by_owner[owner].push(Item {
                        slot,
                        topic: topic.clone(),
                        partition: p.index,
                        records,
                        origin,
                    });
                }
            }
            slot += 1;
        }
    }
    // Phase 1, in request order: every owner appends its share.
    let acks = req.acks;
    let mut durable_waits = Vec::new();
    for (owner, items) in by_owner.into_iter().enumerate() {
        if items.is_empty() {
            continue;
        }
        let slots: Vec<usize> = items.iter().map(|i| i.slot).collect();
        let from = shard.id;
        let appended = shard
            .call(owner, move |s| async move {
                append_local(&s, items, acks == -1, from).await
            })
            .await;
        match appended {
            Ok((results, durable)) => {
                for (slot, o) in results {
                    outcomes[slot] = Some(o);
                }
                if let Some(d) = durable {
                    durable_waits.push(d);
                }
            }
            Err(_) => {
                for s in slots {
                    outcomes[s] = Some(Outcome::error(
                        ResponseError::NotLeaderOrFollower,
                        "the broker is stopping",
                    ));
                }
            }
        }
    }
    let mut outcomes: Vec<Outcome> = outcomes
        .into_iter()
        .map(|o| o.expect("every partition has an outcome"))
        .collect();
    if acks != -1 || durable_waits.is_empty() {
        return reply(ctx, acks, layout, outcomes);
    }
    // Phase 2: wait for the syncs, letting later requests proceed.
    Reply::Later(Box::pin(async move {
        for d in durable_waits {
            let failed = d.recv_async().await.unwrap_or_else(|_| Vec::new());
            for (slot, code, msg) in failed {
                outcomes[slot].error = code;
                outcomes[slot].message = Some(msg);
            }
        }
        match reply(ctx, acks, layout, outcomes) {
            Reply::Now(r) => r,
            _ => unreachable!("acks=all always answers"),
        }
    }))
}

/// Slots that failed their sync: (slot, error code, message).
type DurableFailures = Vec<(usize, i16, String)>;

/// Appends on the owner shard. With `durable`, also returns a channel that
/// reports, once the covering syncs are done, which appends failed them.
async fn append_local(
    shard: &Rc<Shard>,
    items: Vec<Item>,
    durable: bool,
    from: usize,
) -> (
    Vec<(usize, Outcome)>,
    Option<flume::Receiver<DurableFailures>>,
) {
    let mut out = Vec::with_capacity(items.len());
    let mut to_sync = Vec::new();
    for item in items {
        if from != shard.id {
            shard.note(|s| {
                s.forwarded_batches += 1;
                if item.records.as_ptr() as usize != item.origin {
                    s.forwarded_batches_copied += 1;
                }
            });
        }
        let Some(p) = shard.partition(&item.topic, item.partition) else {
            out.push((
                item.slot,
                Outcome::error(
                    ResponseError::NotLeaderOrFollower,
                    format!(
                        "partition {}-{} is not open here",
                        item.topic, item.partition
                    ),
                ),
            ));
            continue;
        };
        let o = append_partition(&p, item.records).await;
        if durable && o.error == 0 {
            to_sync.push((item.slot, p.log.clone(), p.log.log_end_offset() - 1));
        }
        out.push((item.slot, o));
    }
    if !durable {
        return (out, None);
    }
    let (tx, rx) = flume::bounded(1);
    glommio::spawn_local(async move {
        let mut failed = Vec::new();
        for (slot, log, last) in to_sync {
            if let Err(e) = log.wait_durable(last).await {
                failed.push((slot, e.kafka_code(), e.to_string()));
            }
        }
        let _ = tx.send_async(failed).await;
    })
    .detach();
    (out, Some(rx))
}

async fn append_partition(p: &crate::shard::Partition, records: Bytes) -> Outcome {
    let limit = p.log.config().batch_limit();
    let batches = match batch::split_batches(&records) {
        Ok(b) if !b.is_empty() => b,
        Ok(_) => return Outcome::error(ResponseError::InvalidRecord, "no record batch"),
        Err(e) => return Outcome::storage(e),
    };
    // The log validates every batch it appends (CRC included); with more
    // than one batch, all are validated first so none is written when one
    // is bad. A single batch only needs its header read here.
    let mut headers = Vec::with_capacity(batches.len());
    for b in &batches {
        let h = if batches.len() > 1 {
            batch::validate(b, limit)
        } else {
            sluice_storage::BatchHeader::parse(b).ok_or_else(|| {
                sluice_storage::StorageError::CorruptMessage("batch shorter than its header".into())
            })
        };
        match h {
            Ok(h) => headers.push(h),
            Err(e) => return Outcome::storage(e),
        }
    }
    let mut first: Option<Outcome> = None;
    for (b, h) in batches.into_iter().zip(headers) {
        let check = p.producers.borrow().check(&h);
        let o = match check {
            SeqCheck::Refuse(code) => Outcome {
                error: code,
                message: Some(format!(
                    "producer {} epoch {} sequence {} refused: {}",
                    h.producer_id,
                    h.producer_epoch,
                    h.base_sequence,
                    ResponseError::try_from_code(code)
                        .map_or("error".to_string(), |e| format!("{e:?}"))
                )),
                base_offset: -1,
                log_append_time_ms: -1,
                log_start_offset: p.log.log_start_offset(),
            },
            SeqCheck::Duplicate(d) => Outcome {
                error: 0,
                message: None,
                base_offset: d.base_offset,
                log_append_time_ms: d.log_append_time_ms,
                log_start_offset: p.log.log_start_offset(),
            },
            SeqCheck::Append => match p.log.append(b).await {
                Ok(info) => {
                    p.producers
                        .borrow_mut()
                        .record(&h, info.base_offset, info.log_append_time_ms);
                    // One node: the high watermark follows the log end.
                    p.log.set_high_watermark(info.last_offset + 1);
                    p.appended.notify_all();
                    Outcome {
                        error: 0,
                        message: None,
                        base_offset: info.base_offset,
                        log_append_time_ms: info.log_append_time_ms,
                        log_start_offset: info.log_start_offset,
                    }
                }
                Err(e) => Outcome::storage(e),
            },
        };
        if o.error != 0 {
            return o;
        }
        first.get_or_insert(o);
    }
    first.expect("at least one batch")
}

/// Topic names and partition indexes, in request order.
fn shape(req: &ProduceRequest) -> Vec<(kafka_protocol::messages::TopicName, Vec<i32>)> {
    req.topic_data
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.partition_data.iter().map(|p| p.index).collect(),
            )
        })
        .collect()
}

fn reply(
    ctx: Ctx,
    acks: i16,
    layout: Vec<(kafka_protocol::messages::TopicName, Vec<i32>)>,
    outcomes: Vec<Outcome>,
) -> Reply {
    if acks == 0 {
        return Reply::Nothing;
    }
    let mut it = outcomes.into_iter();
    let responses = layout
        .into_iter()
        .map(|(name, parts)| {
            TopicProduceResponse::default()
                .with_name(name)
                .with_partition_responses(
                    parts
                        .into_iter()
                        .map(|index| {
                            let o = it.next().expect("one outcome per partition");
                            PartitionProduceResponse::default()
                                .with_index(index)
                                .with_error_code(o.error)
                                .with_error_message(o.message.map(StrBytes::from_string))
                                .with_base_offset(o.base_offset)
                                .with_log_append_time_ms(o.log_append_time_ms)
                                .with_log_start_offset(o.log_start_offset)
                        })
                        .collect(),
                )
        })
        .collect();
    Reply::Now(ctx.answer(ResponseKind::Produce(
        ProduceResponse::default().with_responses(responses),
    )))
}
