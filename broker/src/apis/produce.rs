//! Produce: append each partition's batches on its owner shard, in request
//! order, then answer: acks=0 never, acks=1 once appended, acks=all once
//! the group commit covering the batches has synced them.
//!
//! Batches travel to the owner as `Bytes` slices of the receive buffer;
//! compressed batches are stored as they arrive. Every batch of a
//! partition is validated before any is appended, so a request never
//! writes part of a partition's data.

use crate::security::acl::Operation;
use crate::security::Authz;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_storage::batch;

use super::{Ctx, Reply};
use crate::metadata::Route;
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
    authz: &Authz<'_>,
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
        let writable = authz.topic(Operation::Write, &topic);
        for p in t.partition_data {
            if !writable {
                outcomes[slot] = Some(Outcome::error(
                    ResponseError::TopicAuthorizationFailed,
                    format!("WRITE on topic {topic} is not allowed"),
                ));
                slot += 1;
                continue;
            }
            let records = p.records.unwrap_or_default();
            if let Err(r) = crate::metadata::check_not_internal(&topic) {
                outcomes[slot] = Some(Outcome::failed(r.code, r.message));
                slot += 1;
                continue;
            }
            match meta.route(&topic, p.index) {
                Route::Unknown => {
                    outcomes[slot] = Some(Outcome::error(
                        ResponseError::UnknownTopicOrPartition,
                        format!("no partition {topic}-{}", p.index),
                    ))
                }
                Route::NotLeader => {
                    outcomes[slot] = Some(Outcome::error(
                        ResponseError::NotLeaderOrFollower,
                        format!("this node does not lead {topic}-{}", p.index),
                    ))
                }
                Route::Shard(_) if req.acks == -1 && !enough_in_sync(&meta, &topic, p.index) => {
                    outcomes[slot] = Some(Outcome::error(
                        ResponseError::NotEnoughReplicas,
                        format!(
                            "{topic}-{} has fewer in-sync replicas than its min.insync.replicas",
                            p.index
                        ),
                    ))
                }
                Route::Shard(owner) => {
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
                    durable_waits.push((slots, d));
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
        for (slots, d) in durable_waits {
            let report = d.recv_async().await.ok();
            apply_durable_report(&mut outcomes, &slots, report);
        }
        match reply(ctx, acks, layout, outcomes) {
            Reply::Now(r) => r,
            _ => unreachable!("acks=all always answers"),
        }
    }))
}

/// Slots that failed their sync: (slot, error code, message).
type DurableFailures = Vec<(usize, i16, String)>;

/// Applies one owner's durability report to the answers of its `slots`.
/// No report at all (the owner shard stopped before its syncs finished)
/// means nothing is known to be durable: every append that succeeded is
/// answered REQUEST_TIMED_OUT, which clients retry (an idempotent retry
/// is then answered from the producer state, not written twice), never
/// as a success.
fn apply_durable_report(
    outcomes: &mut [Outcome],
    slots: &[usize],
    report: Option<DurableFailures>,
) {
    match report {
        Some(failed) => {
            for (slot, code, msg) in failed {
                outcomes[slot].error = code;
                outcomes[slot].message = Some(msg);
            }
        }
        None => {
            for &slot in slots {
                if outcomes[slot].error == 0 {
                    outcomes[slot] = Outcome::error(
                        ResponseError::RequestTimedOut,
                        "the partition's shard stopped before its sync reported; \
                         the records may or may not be durable",
                    );
                }
            }
        }
    }
}

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
        crate::failstop::panic_on_produce(&item.topic);
        crate::failstop::stall_on_produce(&item.topic);
        crate::failstop::slow_produce(&item.topic).await;
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
        // The lead may have moved since the request was routed here.
        if p.replication
            .role
            .borrow()
            .as_ref()
            .is_some_and(|r| !r.leader)
        {
            out.push((
                item.slot,
                Outcome::error(
                    ResponseError::NotLeaderOrFollower,
                    format!(
                        "this node no longer leads {}-{}",
                        item.topic, item.partition
                    ),
                ),
            ));
            continue;
        }
        let epoch = p.leader_epoch();
        let o = append_partition(&p, item.records).await;
        if durable && o.error == 0 {
            to_sync.push((item.slot, p.clone(), p.log.log_end_offset() - 1, epoch));
        }
        out.push((item.slot, o));
    }
    if !durable {
        return (out, None);
    }
    let (tx, rx) = flume::bounded(1);
    glommio::spawn_local(sluice_storage::stall::watch(
        "durability wait",
        async move {
            let mut failed = Vec::new();
            for (slot, p, last, epoch) in to_sync {
                if let Err(e) = p.log.wait_durable(last).await {
                    failed.push((slot, e.kafka_code(), e.to_string()));
                    continue;
                }
                // Replicated: also on every in-sync replica's disk (at
                // once when this node is the only one in sync).
                if p.replication.role.borrow().is_some() {
                    use crate::cluster::replica::{wait_high_watermark, Replicated};
                    match wait_high_watermark(&p, last, epoch, ACKS_ALL_WAIT).await {
                        Replicated::Yes => {}
                        Replicated::TimedOut => failed.push((
                            slot,
                            ResponseError::RequestTimedOut.code(),
                            format!(
                                "not on every in-sync replica within {} s",
                                ACKS_ALL_WAIT.as_secs()
                            ),
                        )),
                        Replicated::LeaderChanged => failed.push((
                            slot,
                            ResponseError::NotLeaderOrFollower.code(),
                            "this node stopped leading the partition before every in-sync \
                             replica had the batch"
                                .into(),
                        )),
                    }
                }
            }
            let _ = tx.send_async(failed).await;
        },
    ))
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
            batch::validate_async(b, limit).await
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
    // The partition's gate is held from the sequence checks to the last
    // append: the same retried batch arriving on two connections is then
    // checked the second time against the first one's record, never
    // written twice; and no other request's batches land between this
    // request's.
    let Ok(_gate) = p.append_gate.acquire_permit(1).await else {
        return Outcome::error(
            ResponseError::NotLeaderOrFollower,
            "the partition was closed",
        );
    };
    // Every batch's sequence is checked (each as if those before it were
    // written) before any is appended, so a request whose later batch is
    // refused writes none of its batches.
    let plan = {
        let table = p.producers.borrow();
        plan_batches(&table, &headers)
    };
    let plan = match plan {
        Ok(plan) => plan,
        Err((h, code)) => {
            return Outcome {
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
            }
        }
    };
    let mut first: Option<Outcome> = None;
    for ((b, h), check) in batches.into_iter().zip(headers).zip(plan) {
        let batch_bytes = b.len() as u64;
        let o = match check {
            SeqCheck::Refuse(_) => unreachable!("refusals end the plan"),
            SeqCheck::Duplicate(d) => Outcome {
                error: 0,
                message: None,
                base_offset: d.base_offset,
                log_append_time_ms: d.log_append_time_ms,
                log_start_offset: p.log.log_start_offset(),
            },
            SeqCheck::Append => match p.log.append(b).await {
                Ok(info) => {
                    p.bytes_in.set(p.bytes_in.get() + batch_bytes);
                    p.records_in
                        .set(p.records_in.get() + (info.last_offset - info.base_offset + 1) as u64);
                    p.producers
                        .borrow_mut()
                        .record(&h, info.base_offset, info.log_append_time_ms);
                    // One node: the high watermark follows the log end;
                    // replicated, it follows the in-sync replicas.
                    if p.replication.other_in_sync().is_none() {
                        p.log.set_high_watermark(info.last_offset + 1);
                    } else {
                        crate::cluster::replica::update_high_watermark(p);
                    }
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

/// The sequence check of every batch of one request, each checked as if
/// the ones before it were appended; the first refusal ends it.
fn plan_batches(
    table: &crate::producers::ProducerTable,
    headers: &[sluice_storage::BatchHeader],
) -> Result<Vec<SeqCheck>, (sluice_storage::BatchHeader, i16)> {
    if headers.len() == 1 {
        return match table.check(&headers[0]) {
            SeqCheck::Refuse(code) => Err((headers[0], code)),
            c => Ok(vec![c]),
        };
    }
    // A scratch copy of just the producers these batches name.
    let mut scratch = crate::producers::ProducerTable::default();
    for h in headers {
        if let Some(e) = table.producers.get(&h.producer_id) {
            scratch.producers.insert(h.producer_id, e.clone());
        }
    }
    let mut plan = Vec::with_capacity(headers.len());
    for h in headers {
        let c = scratch.check(h);
        match c {
            SeqCheck::Refuse(code) => return Err((*h, code)),
            SeqCheck::Append => scratch.record(h, -1, -1),
            SeqCheck::Duplicate(_) => {}
        }
        plan.push(c);
    }
    Ok(plan)
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

/// How long an acks=all produce waits for its in-sync replicas.
const ACKS_ALL_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether a partition has the in-sync replicas an acks=all produce
/// needs (a single broker's partitions always do).
fn enough_in_sync(meta: &crate::metadata::Snapshot, topic: &str, partition: i32) -> bool {
    let Some(t) = meta.topic(topic) else {
        return false;
    };
    match t.roles.get(partition as usize) {
        None => true,
        Some(r) => {
            r.isr.len()
                >= usize::from(crate::metadata::min_insync(
                    &t.configs,
                    r.replicas.len() as u16,
                ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(base_offset: i64) -> Outcome {
        Outcome {
            error: 0,
            message: None,
            base_offset,
            log_append_time_ms: -1,
            log_start_offset: 0,
        }
    }

    // An acks=all answer is a success only when its owner reported the
    // covering sync: a report that never comes (the owner stopped) is an
    // error for every append of that owner, and a refusal is kept.
    #[test]
    fn a_lost_durability_report_is_an_error_not_a_success() {
        let unknown = Outcome::error(ResponseError::UnknownTopicOrPartition, "none");
        let mut outcomes = vec![ok(0), ok(10), unknown.clone(), ok(20)];
        apply_durable_report(&mut outcomes, &[0, 2], None);
        assert_eq!(outcomes[0].error, ResponseError::RequestTimedOut.code());
        assert_eq!(
            outcomes[2].error, unknown.error,
            "a refusal stays as it was"
        );
        apply_durable_report(
            &mut outcomes,
            &[1, 3],
            Some(vec![(
                3,
                ResponseError::KafkaStorageError.code(),
                "eio".into(),
            )]),
        );
        assert_eq!(outcomes[1].error, 0, "reported durable");
        assert_eq!(outcomes[3].error, ResponseError::KafkaStorageError.code());
    }

    fn idempotent(pid: i64, seq: i32, count: i32) -> sluice_storage::BatchHeader {
        let mut b =
            sluice_storage::batch::build::uniform(count as usize, 4, 1_700_000_000_000).to_vec();
        b[43..51].copy_from_slice(&pid.to_be_bytes());
        b[53..57].copy_from_slice(&seq.to_be_bytes());
        sluice_storage::BatchHeader::parse(&b).unwrap()
    }

    // A request's batches are checked in order, each as if the ones before
    // it were written: a run in sequence is appended whole, and a gap in a
    // later batch refuses the whole request before anything is written.
    #[test]
    fn a_refused_later_batch_refuses_the_whole_request() {
        let table = crate::producers::ProducerTable::default();
        let run = [
            idempotent(7, 0, 2),
            idempotent(7, 2, 3),
            idempotent(7, 5, 1),
        ];
        assert_eq!(
            plan_batches(&table, &run).unwrap(),
            vec![SeqCheck::Append; 3]
        );
        let gap = [idempotent(7, 0, 2), idempotent(7, 3, 1)];
        let (h, code) = plan_batches(&table, &gap).unwrap_err();
        assert_eq!(h.base_sequence, 3);
        assert_eq!(code, ResponseError::OutOfOrderSequenceNumber.code());
    }
}
