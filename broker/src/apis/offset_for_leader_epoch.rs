//! OffsetForLeaderEpoch: where a leader epoch ends in the leader's log,
//! from its epoch history. Consumers ask it after a leader change to
//! check that the position they hold was not truncated away (KIP-320).

use crate::security::acl::Operation;
use crate::security::Authz;
use std::rc::Rc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ResponseKind,
};
use kafka_protocol::ResponseError;
use sluice_net::response::ResponseChunks;

use super::Ctx;
use crate::metadata::Route;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: Ctx,
    req: OffsetForLeaderEpochRequest,
    authz: &Authz<'_>,
) -> ResponseChunks {
    let meta = shard.meta();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let topic = t.topic.0.to_string();
        let described = authz.topic(Operation::Describe, &topic);
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let refused = |e: ResponseError| (e.code(), -1, -1);
            let (error, epoch, end) = match meta.route(&topic, p.partition) {
                _ if !described => refused(ResponseError::TopicAuthorizationFailed),
                Route::Unknown => refused(ResponseError::UnknownTopicOrPartition),
                Route::NotLeader => refused(ResponseError::NotLeaderOrFollower),
                Route::Shard(owner) => {
                    let (topic, index) = (topic.clone(), p.partition);
                    let (current, asked) = (p.current_leader_epoch, p.leader_epoch);
                    shard
                        .call(owner, move |s| async move {
                            let Some(p) = s.partition(&topic, index) else {
                                return (ResponseError::NotLeaderOrFollower.code(), -1, -1);
                            };
                            if let Err(code) = p.check_leader_epoch(current) {
                                return (code, -1, -1);
                            }
                            let (e, end) = p.log.end_offset_for_epoch(asked);
                            (0, e, end)
                        })
                        .await
                        .unwrap_or(refused(ResponseError::NotLeaderOrFollower))
                }
            };
            parts.push(
                EpochEndOffset::default()
                    .with_partition(p.partition)
                    .with_error_code(error)
                    .with_leader_epoch(epoch)
                    .with_end_offset(end),
            );
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(parts),
        );
    }
    ctx.answer(ResponseKind::OffsetForLeaderEpoch(
        OffsetForLeaderEpochResponse::default().with_topics(topics),
    ))
}
