//! OffsetCommit: checked against the group's generation and member (or
//! accepted from outside group management for a group without members),
//! stored durably in the coordinator shard's offsets log, and answered
//! only once durable.

use crate::security::acl::Operation;
use crate::security::Authz;
use std::rc::Rc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse, ResponseKind};
use kafka_protocol::ResponseError;

use super::{answer_from, Ctx, Reply};
use crate::groups::offsets::{now_ms, Committed};
use crate::metadata::Route;
use crate::shard::Shard;
use sluice_tuning::limits;

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: Ctx,
    req: OffsetCommitRequest,
    authz: &Authz<'_>,
) -> Reply {
    let group = req.group_id.0.to_string();
    // READ on the group, and on each topic committed.
    let group_read = authz.group(Operation::Read, &group);
    let meta = shard.meta();
    // Per partition: (topic name, index, Ok(commit) or an error code).
    let mut slots = Vec::new();
    let mut items = Vec::new();
    let now = now_ms();
    let group_ok = !group.is_empty() && group.len() <= limits::GROUP_NAME_BYTES_MAX;
    for t in &req.topics {
        let topic = t.name.0.to_string();
        let topic_read = authz.topic(Operation::Read, &topic);
        for p in &t.partitions {
            let code = if !group_read {
                ResponseError::GroupAuthorizationFailed.code()
            } else if !group_ok {
                ResponseError::InvalidGroupId.code()
            } else if !topic_read {
                ResponseError::TopicAuthorizationFailed.code()
            } else if meta.route(&topic, p.partition_index) == Route::Unknown {
                ResponseError::UnknownTopicOrPartition.code()
            } else if p
                .committed_metadata
                .as_ref()
                .is_some_and(|m| m.len() > limits::OFFSET_METADATA_BYTES_MAX)
            {
                ResponseError::OffsetMetadataTooLarge.code()
            } else {
                0
            };
            let known = code == 0;
            slots.push((t.name.clone(), p.partition_index, code));
            if known {
                items.push((
                    (group.clone(), topic.clone(), p.partition_index),
                    Some(Committed {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                        commit_time_ms: now,
                    }),
                ));
            }
        }
    }
    let member = req.member_id.to_string();
    let instance = req.group_instance_id.map(|i| i.to_string());
    let generation = req.generation_id_or_member_epoch;
    let owner = shard.group_owner(&group);
    let done = if !group_read {
        // Never reaches the coordinator; every partition says why.
        let (tx, rx) = flume::bounded::<i16>(1);
        let _ = tx.try_send(ResponseError::GroupAuthorizationFailed.code());
        Ok(rx)
    } else {
        shard
            .call_coordinator(owner, move |c| async move {
                let (tx, rx) = flume::bounded::<i16>(1);
                match c.check_commit(&group, &member, instance.as_deref(), generation) {
                    Err(code) => {
                        let _ = tx.try_send(code);
                    }
                    Ok(()) => match c.check_offset_keys(&items) {
                        Ok(()) => c.spawn_group_commit(&group, items, tx),
                        Err(code) => {
                            let _ = tx.try_send(code);
                        }
                    },
                }
                rx
            })
            .await
    };
    Reply::Later(Box::pin(async move {
        let code = answer_from(done, || ResponseError::CoordinatorNotAvailable.code()).await;
        let mut topics: Vec<OffsetCommitResponseTopic> = Vec::new();
        for (name, index, refused) in slots {
            let code = if refused == 0 { code } else { refused };
            let p = OffsetCommitResponsePartition::default()
                .with_partition_index(index)
                .with_error_code(code);
            match topics.last_mut() {
                Some(t) if t.name == name => t.partitions.push(p),
                _ => topics.push(
                    OffsetCommitResponseTopic::default()
                        .with_name(name)
                        .with_partitions(vec![p]),
                ),
            }
        }
        ctx.answer(ResponseKind::OffsetCommit(
            OffsetCommitResponse::default().with_topics(topics),
        ))
    }))
}
