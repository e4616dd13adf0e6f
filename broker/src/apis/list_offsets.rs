//! ListOffsets: the log start offset (earliest, -2), the high watermark
//! (latest, -1), or the first offset whose timestamp is at or after a time.

use crate::security::acl::Operation;
use crate::security::Authz;
use std::rc::Rc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse, ResponseKind};
use kafka_protocol::ResponseError;
use sluice_net::response::ResponseChunks;

use super::Ctx;
use crate::metadata::Route;
use crate::shard::Shard;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

#[derive(Debug, Clone, Copy)]
struct Found {
    error: i16,
    timestamp: i64,
    offset: i64,
    /// The leader epoch of the offset's batch (latest: the current one).
    epoch: i32,
}

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: Ctx,
    req: ListOffsetsRequest,
    authz: &Authz<'_>,
) -> ResponseChunks {
    let meta = shard.meta();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let topic = t.name.0.to_string();
        let described = authz.topic(Operation::Describe, &topic);
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let found = match meta.route(&topic, p.partition_index) {
                _ if !described => Found {
                    error: ResponseError::TopicAuthorizationFailed.code(),
                    timestamp: -1,
                    offset: -1,
                    epoch: -1,
                },
                Route::Unknown => Found {
                    error: ResponseError::UnknownTopicOrPartition.code(),
                    timestamp: -1,
                    offset: -1,
                    epoch: -1,
                },
                Route::NotLeader => Found {
                    error: ResponseError::NotLeaderOrFollower.code(),
                    timestamp: -1,
                    offset: -1,
                    epoch: -1,
                },
                Route::Shard(owner) => {
                    let (topic, index, ts) = (topic.clone(), p.partition_index, p.timestamp);
                    let current = p.current_leader_epoch;
                    shard
                        .call(owner, move |s| async move {
                            lookup(&s, &topic, index, ts, current).await
                        })
                        .await
                        .unwrap_or(Found {
                            error: ResponseError::NotLeaderOrFollower.code(),
                            timestamp: -1,
                            offset: -1,
                            epoch: -1,
                        })
                }
            };
            parts.push(
                ListOffsetsPartitionResponse::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(found.error)
                    .with_timestamp(found.timestamp)
                    .with_offset(found.offset)
                    // The field exists from v4; unknown (-1) before.
                    .with_leader_epoch(if ctx.version >= 4 { found.epoch } else { -1 }),
            );
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(parts),
        );
    }
    ctx.answer(ResponseKind::ListOffsets(
        ListOffsetsResponse::default().with_topics(topics),
    ))
}

async fn lookup(shard: &Rc<Shard>, topic: &str, index: i32, ts: i64, current: i32) -> Found {
    let refused = |error: i16| Found {
        error,
        timestamp: -1,
        offset: -1,
        epoch: -1,
    };
    let Some(p) = shard.partition(topic, index) else {
        return refused(ResponseError::NotLeaderOrFollower.code());
    };
    if let Err(code) = p.check_leader_epoch(current) {
        return refused(code);
    }
    let ok = |offset: i64| Found {
        error: 0,
        timestamp: -1,
        offset,
        epoch: epoch_of(&p, offset),
    };
    match ts {
        LATEST if p.high_watermark_pending() => refused(ResponseError::OffsetNotAvailable.code()),
        LATEST => Found {
            epoch: p.leader_epoch(),
            ..ok(p.log.high_watermark())
        },
        EARLIEST => ok(p.log.log_start_offset()),
        ts if ts < 0 => refused(ResponseError::InvalidRequest.code()),
        ts => match p.log.offset_for_timestamp(ts).await {
            // The record's own timestamp is not kept by the time index;
            // clients use the offset.
            Ok(Some(offset)) if offset < p.log.high_watermark() => Found {
                timestamp: ts,
                ..ok(offset)
            },
            Ok(_) => Found {
                epoch: -1,
                ..ok(-1)
            },
            Err(e) => refused(e.kafka_code()),
        },
    }
}

/// The leader epoch of the batch holding `offset` (-1 when unknown).
fn epoch_of(p: &crate::shard::Partition, offset: i64) -> i32 {
    p.log
        .leader_epochs()
        .iter()
        .rev()
        .find(|&&(_, start)| start <= offset)
        .map_or(-1, |&(e, _)| e)
}
