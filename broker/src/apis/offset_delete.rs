//! OffsetDelete: a group's committed offsets for partitions of topics none
//! of its members subscribes to.

use crate::security::acl::Operation;
use crate::security::Authz;
use std::rc::Rc;

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse, ResponseKind};
use kafka_protocol::ResponseError;
use sluice_net::response::ResponseChunks;

use super::{answer_from, Ctx};
use crate::shard::Shard;

/// DELETE on the group (checked before the handler) and READ on each
/// topic.
pub async fn handle(
    shard: &Rc<Shard>,
    ctx: Ctx,
    req: OffsetDeleteRequest,
    authz: &Authz<'_>,
) -> ResponseChunks {
    let group = req.group_id.0.to_string();
    let readable: Vec<bool> = req
        .topics
        .iter()
        .map(|t| authz.topic(Operation::Read, &t.name))
        .collect();
    let asked: Vec<(String, i32)> = req
        .topics
        .iter()
        .zip(&readable)
        .filter(|(_, r)| **r)
        .flat_map(|(t, _)| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    let owner = shard.group_owner(&group);
    let rx = shard
        .call_coordinator(
            owner,
            move |c| async move { c.delete_offsets(&group, asked) },
        )
        .await;
    let (code, codes) = answer_from(rx, || {
        (ResponseError::CoordinatorNotAvailable.code(), Vec::new())
    })
    .await;
    let out = OffsetDeleteResponse::default().with_error_code(code);
    let out = if code != 0 {
        out
    } else {
        let mut codes = codes.into_iter();
        out.with_topics(
            req.topics
                .into_iter()
                .zip(readable)
                .map(|(t, readable)| {
                    OffsetDeleteResponseTopic::default()
                        .with_name(t.name)
                        .with_partitions(
                            t.partitions
                                .into_iter()
                                .map(|p| {
                                    let code = match readable {
                                        true => codes.next().unwrap_or(0),
                                        false => ResponseError::TopicAuthorizationFailed.code(),
                                    };
                                    OffsetDeleteResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
    };
    ctx.answer(ResponseKind::OffsetDelete(out))
}
