//! Fetch: read each partition on its owner shard, long-poll until
//! `min_bytes` are there or `max_wait_ms` passes (woken by appends), and
//! answer with the batches as `Bytes` shared with the log: record bytes go
//! from the log (or its cache) to the socket without being copied into the
//! response buffer.
//!
//! Fetch sessions (KIP-227) are not kept: every answer is a full one with
//! session id 0, which clients accept.

use crate::security::acl::Operation;
use crate::security::Authz;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use kafka_protocol::ResponseError;
use sluice_net::response::{records_placeholder, RECORDS_PLACEHOLDER_BYTES_MAX};
use sluice_storage::StorageError;
use sluice_tuning::limits;

use super::{Ctx, Reply};
use crate::metadata::Route;
use crate::shard::Shard;

#[derive(Debug, Clone)]
struct Want {
    slot: usize,
    topic: String,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    /// The client's CurrentLeaderEpoch (-1: none).
    current_leader_epoch: i32,
}

#[derive(Debug, Clone, Default)]
struct Got {
    error: i16,
    high_watermark: i64,
    log_start_offset: i64,
    chunks: Vec<Bytes>,
    bytes: usize,
    /// The partition's append count when it was read: a wait for more
    /// data waits for it to change.
    generation: u64,
}

pub fn handle(shard: &Rc<Shard>, ctx: Ctx, req: FetchRequest, authz: &Authz<'_>) -> Reply {
    // READ on each topic, decided now: the fetch runs as a task of its
    // own.
    let readable: Vec<bool> = req
        .topics
        .iter()
        .map(|t| authz.topic(Operation::Read, &t.topic))
        .collect();
    let shard = shard.clone();
    Reply::Task(Box::pin(
        async move { fetch(&shard, ctx, req, readable).await },
    ))
}

async fn fetch(
    shard: &Rc<Shard>,
    ctx: Ctx,
    req: FetchRequest,
    readable: Vec<bool>,
) -> sluice_net::response::ResponseChunks {
    let started = Instant::now();
    let wait =
        Duration::from_millis((req.max_wait_ms.max(0) as u64).min(limits::FETCH_WAIT_MS_MAX));
    let max_bytes = (req.max_bytes.max(0) as usize).min(limits::FETCH_RESPONSE_BYTES_MAX);
    let min_bytes = req.min_bytes.max(0) as usize;
    let meta = shard.meta();
    let mut layout: Vec<(TopicName, Vec<i32>)> = Vec::new();
    let mut wants: Vec<Vec<Want>> = (0..shard.shards).map(|_| Vec::new()).collect();
    let mut results: Vec<Got> = Vec::new();
    for (t, readable) in req.topics.iter().zip(readable) {
        let topic = t.topic.0.to_string();
        let mut parts = Vec::new();
        for p in &t.partitions {
            let slot = results.len();
            results.push(Got {
                error: ResponseError::UnknownTopicOrPartition.code(),
                high_watermark: -1,
                log_start_offset: -1,
                ..Default::default()
            });
            parts.push(p.partition);
            if !readable {
                results[slot].error = ResponseError::TopicAuthorizationFailed.code();
                continue;
            }
            if meta.route(&topic, p.partition) == Route::NotLeader {
                results[slot].error = ResponseError::NotLeaderOrFollower.code();
            }
            if let Route::Shard(owner) = meta.route(&topic, p.partition) {
                wants[owner].push(Want {
                    slot,
                    topic: topic.clone(),
                    partition: p.partition,
                    offset: p.fetch_offset,
                    current_leader_epoch: p.current_leader_epoch,
                    max_bytes: (p.partition_max_bytes.max(0) as usize)
                        .min(RECORDS_PLACEHOLDER_BYTES_MAX),
                });
            }
        }
        layout.push((t.topic.clone(), parts));
    }
    // A partition no shard owns is answered at once with its error, as
    // Kafka answers a fetch with an error in it; and a fetch of nothing at
    // all (no partitions) is answered at once too, as Kafka does. Either
    // would otherwise wait with no partition to wake it.
    let unknown = results.len() > wants.iter().map(Vec::len).sum::<usize>();
    let nothing_to_wait_for = wants.iter().all(Vec::is_empty);
    loop {
        // Read everything asked for, owner by owner, each given what the
        // owners before it left of max_bytes (not the whole of it each).
        let mut total = 0usize;
        let mut any_error = unknown;
        for (owner, w) in wants.iter().enumerate() {
            if w.is_empty() {
                continue;
            }
            let w = w.clone();
            let budget = max_bytes.saturating_sub(total);
            let read_any = total > 0;
            let got = shard
                .call(owner, move |s| async move {
                    read_local(&s, w, budget, read_any).await
                })
                .await
                .unwrap_or_default();
            for (slot, g) in got {
                any_error |= g.error != 0;
                total += g.bytes;
                results[slot] = g;
            }
        }
        let remaining = wait.saturating_sub(started.elapsed());
        if total >= min_bytes.max(1)
            || any_error
            || remaining.is_zero()
            || nothing_to_wait_for
            || shard.is_stopping()
        {
            break;
        }
        // Wait for an append to any of the partitions, or the deadline.
        let (tx, rx) = flume::bounded::<()>(shard.shards);
        let mut waiting = 0usize;
        for (owner, w) in wants.iter().enumerate() {
            if w.is_empty() {
                continue;
            }
            let w: Vec<(String, i32, u64)> = w
                .iter()
                .map(|w| (w.topic.clone(), w.partition, results[w.slot].generation))
                .collect();
            let tx = tx.clone();
            let registered = shard
                .call(owner, move |s| async move {
                    glommio::spawn_local(sluice_storage::stall::watch("fetch wait", async move {
                        wait_for_data(&s, w, remaining).await;
                        let _ = tx.try_send(());
                    }))
                    .detach();
                })
                .await;
            waiting += usize::from(registered.is_ok());
        }
        drop(tx);
        if waiting == 0 {
            // Every owner is gone (the broker is stopping): nothing can
            // wake this wait, and a loop around it would never yield.
            break;
        }
        // Woken or not, read again: past the deadline that last read
        // finds anything that arrived meanwhile, and then the loop ends.
        let stopping = shard.stopping.changed(0);
        futures_lite::future::or(
            futures_lite::future::or(
                async {
                    let _ = rx.recv_async().await;
                },
                stopping,
            ),
            glommio::timer::sleep(remaining),
        )
        .await;
    }
    // Trim to max_bytes in answer order; the first non-empty record set is
    // kept whole even when larger (KIP-74), or consumers would stall.
    let mut budget = max_bytes;
    let mut first = true;
    for g in results.iter_mut() {
        if g.bytes == 0 {
            continue;
        }
        if !first && g.bytes > budget {
            g.chunks.clear();
            g.bytes = 0;
            continue;
        }
        budget = budget.saturating_sub(g.bytes);
        first = false;
    }
    let mut records = Vec::new();
    let mut it = results.into_iter();
    let responses = layout
        .into_iter()
        .map(|(name, parts)| {
            FetchableTopicResponse::default()
                .with_topic(name)
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|index| {
                            let g = it.next().expect("one result per partition");
                            let placeholder = records_placeholder(g.bytes);
                            // The encoder meets only non-empty placeholders.
                            if g.bytes > 0 {
                                records.push(g.chunks);
                            }
                            PartitionData::default()
                                .with_partition_index(index)
                                .with_error_code(g.error)
                                .with_high_watermark(g.high_watermark)
                                .with_last_stable_offset(g.high_watermark)
                                .with_log_start_offset(g.log_start_offset)
                                .with_preferred_read_replica(kafka_protocol::messages::BrokerId(-1))
                                .with_aborted_transactions(Some(Vec::new()))
                                .with_records(Some(placeholder))
                        })
                        .collect(),
                )
        })
        .collect();
    let body = FetchResponse::default()
        .with_session_id(0)
        .with_responses(responses);
    crate::metrics::record_errors(
        ctx.api_key as i16,
        body.responses
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
    );
    ctx.answer_with_records(&body, records)
}

/// Reads on the owner shard. A partition's reads stop at `max_bytes`
/// (what is left of the request's), across this owner's partitions; only
/// the request's first batch may pass it (KIP-74), so `read_any` says
/// whether an owner before this one already read something.
async fn read_local(
    shard: &Rc<Shard>,
    wants: Vec<Want>,
    max_bytes: usize,
    mut read_any: bool,
) -> Vec<(usize, Got)> {
    let mut out = Vec::with_capacity(wants.len());
    let mut budget = max_bytes;
    for w in wants {
        let Some(p) = shard.partition(&w.topic, w.partition) else {
            out.push((
                w.slot,
                Got {
                    error: ResponseError::NotLeaderOrFollower.code(),
                    high_watermark: -1,
                    log_start_offset: -1,
                    ..Default::default()
                },
            ));
            continue;
        };
        let generation = p.appended.generation();
        let hw = p.log.high_watermark();
        let start = p.log.log_start_offset();
        let mut g = Got {
            generation,
            error: 0,
            high_watermark: hw,
            log_start_offset: start,
            ..Default::default()
        };
        if let Err(code) = p.check_leader_epoch(w.current_leader_epoch) {
            g.error = code;
        } else if w.offset < start || w.offset > hw {
            log_out_of_range(shard.id, &w, start, hw);
            g.error = ResponseError::OffsetOutOfRange.code();
        } else if w.offset < hw && w.max_bytes > 0 && (budget > 0 || !read_any) {
            // The first batch comes whole even when over the limits (KIP-74).
            let limit = w.max_bytes.min(budget).max(1);
            match p.log.read(w.offset, limit).await {
                Ok(batches) => {
                    for b in batches {
                        if b.base_offset() >= hw {
                            break;
                        }
                        if g.bytes + b.len() > RECORDS_PLACEHOLDER_BYTES_MAX {
                            break;
                        }
                        // Past the first batch, nothing beyond the budget
                        // is kept (the log reads at least one batch).
                        if read_any && g.bytes + b.len() > budget {
                            break;
                        }
                        read_any = true;
                        g.bytes += b.len();
                        p.bytes_out.set(p.bytes_out.get() + b.len() as u64);
                        p.records_out
                            .set(p.records_out.get() + (b.next_offset() - b.base_offset()) as u64);
                        for c in b.chunks() {
                            g.chunks.push(c.clone());
                        }
                    }
                }
                Err(StorageError::OffsetOutOfRange {
                    log_start, log_end, ..
                }) => {
                    log_out_of_range(shard.id, &w, log_start, log_end);
                    g.error = ResponseError::OffsetOutOfRange.code();
                }
                Err(e) => {
                    tracing::warn!(shard = shard.id, topic = w.topic, partition = w.partition,
                        offset = w.offset, error = %e, "fetch read failed");
                    g.error = e.kafka_code();
                }
            }
        }
        budget = budget.saturating_sub(g.bytes);
        shard.note(|s| s.fetch_bytes_read += g.bytes as u64);
        out.push((w.slot, g));
    }
    out
}

thread_local! {
    /// This shard's out-of-range fetch lines: when the last was written,
    /// and how many were left out since.
    static OUT_OF_RANGE_LOGGED: std::cell::Cell<(Option<Instant>, u64)> =
        const { std::cell::Cell::new((None, 0)) };
}

/// A fetch outside [log start, high watermark]: the consumer is about to
/// reset by its auto.offset.reset, which an operator wants to see. At most
/// one line a second per shard (a client that keeps asking would
/// otherwise fill the log), saying how many were left out.
fn log_out_of_range(shard: usize, w: &Want, log_start: i64, high_watermark: i64) {
    OUT_OF_RANGE_LOGGED.with(|c| {
        let (last, left_out) = c.get();
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            c.set((last, left_out + 1));
            return;
        }
        c.set((Some(now), 0));
        tracing::info!(
            shard,
            topic = w.topic,
            partition = w.partition,
            offset = w.offset,
            log_start,
            high_watermark,
            left_out,
            "fetch outside the log: OFFSET_OUT_OF_RANGE"
        );
    });
}

/// On the owner shard: returns once any of the partitions took an append
/// since it was read (its generation moved), or is gone, or `timeout`
/// passes.
async fn wait_for_data(shard: &Rc<Shard>, wants: Vec<(String, i32, u64)>, timeout: Duration) {
    let mut waits = Vec::with_capacity(wants.len());
    for (topic, partition, seen) in &wants {
        match shard.partition(topic, *partition) {
            Some(p) => waits.push(p.appended.changed(*seen)),
            None => return,
        }
    }
    let any = futures_lite::future::poll_fn(|cx| {
        for w in waits.iter_mut() {
            if Pin::new(w).poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    });
    futures_lite::future::or(any, glommio::timer::sleep(timeout)).await;
}
