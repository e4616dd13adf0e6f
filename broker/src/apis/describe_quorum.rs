//! DescribeQuorum: the metadata log's quorum (KIP-595's
//! `__cluster_metadata`, partition 0): its leader (the controller), term,
//! committed index and, on the controller, each voter's log end and when
//! it was last heard from. A node that does not lead answers
//! NOT_LEADER_OR_FOLLOWER and names the leader it knows; a cluster of one
//! answers as its own quorum of one.

use std::rc::Rc;

use kafka_protocol::messages::describe_quorum_response::{PartitionData, ReplicaState, TopicData};
use kafka_protocol::messages::{
    BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, ResponseKind,
};
use kafka_protocol::ResponseError;
use sluice_net::response::ResponseChunks;

use super::Ctx;
use crate::shard::Shard;

/// The metadata log's name, as KRaft calls it.
pub const METADATA_TOPIC: &str = "__cluster_metadata";

pub fn handle(shard: &Rc<Shard>, ctx: Ctx, req: DescribeQuorumRequest) -> ResponseChunks {
    let me = shard.cfg.node_id;
    let mut topics = Vec::new();
    for t in req.topics {
        let mut parts = Vec::new();
        for p in t.partitions {
            let mut d = PartitionData::default().with_partition_index(p.partition_index);
            if t.topic_name.0.as_str() != METADATA_TOPIC || p.partition_index != 0 {
                d = d.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                parts.push(d);
                continue;
            }
            let replica = |id: i32, end: i64, heard: i64| {
                ReplicaState::default()
                    .with_replica_id(BrokerId(id))
                    .with_log_end_offset(end)
                    .with_last_fetch_timestamp(heard)
                    .with_last_caught_up_timestamp(-1)
            };
            match (&shard.cfg.cluster, shard.cluster_view()) {
                (None, _) => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64);
                    d = d
                        .with_leader_id(BrokerId(me))
                        .with_current_voters(vec![replica(me, 0, now)]);
                }
                (Some(_), None) => {
                    d = d
                        .with_error_code(ResponseError::NotLeaderOrFollower.code())
                        .with_leader_id(BrokerId(-1));
                }
                (Some(_), Some(v)) => {
                    d = d
                        .with_leader_id(BrokerId(v.controller.unwrap_or(-1)))
                        .with_leader_epoch(v.term as i32)
                        .with_high_watermark(v.commit as i64);
                    if v.controller == Some(me) {
                        d = d.with_current_voters(
                            v.voters
                                .iter()
                                .map(|s| {
                                    let heard = s.last_heard_ms.map_or(-1, |t| t as i64);
                                    replica(s.id, s.log_end as i64, heard)
                                })
                                .collect(),
                        );
                    } else {
                        d = d.with_error_code(ResponseError::NotLeaderOrFollower.code());
                    }
                }
            }
            parts.push(d);
        }
        topics.push(
            TopicData::default()
                .with_topic_name(t.topic_name)
                .with_partitions(parts),
        );
    }
    ctx.answer(ResponseKind::DescribeQuorum(
        DescribeQuorumResponse::default().with_topics(topics),
    ))
}
