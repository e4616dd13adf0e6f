//! SyncGroup: the leader's assignments go to every member; followers wait
//! for the leader.

use std::rc::Rc;

use kafka_protocol::messages::{ResponseKind, SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::ResponseError;

use super::{answer_from, Ctx, Reply};
use crate::groups::group::SyncResult;
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, ctx: Ctx, req: SyncGroupRequest) -> Reply {
    let group = req.group_id.0.to_string();
    let member = req.member_id.to_string();
    let instance = req.group_instance_id.map(|i| i.to_string());
    let generation = req.generation_id;
    let assignments: Vec<(String, bytes::Bytes)> = req
        .assignments
        .into_iter()
        // Copied out of the receive buffer (see JoinGroup).
        .map(|a| {
            (
                a.member_id.to_string(),
                bytes::Bytes::copy_from_slice(&a.assignment),
            )
        })
        .collect();
    let oversized = assignments
        .iter()
        .any(|(_, a)| a.len() > sluice_tuning::limits::GROUP_MEMBER_METADATA_BYTES_MAX);
    let owner = shard.group_owner(&group);
    let rx = if oversized {
        let (tx, rx) = flume::bounded(1);
        let _ = tx.try_send(SyncResult::error(ResponseError::InvalidRequest));
        Ok(rx)
    } else {
        shard
            .call_coordinator(owner, move |c| async move {
                c.sync(
                    &group,
                    &member,
                    instance.as_deref(),
                    generation,
                    assignments,
                )
            })
            .await
    };
    Reply::Later(Box::pin(async move {
        let r = answer_from(rx, || {
            SyncResult::error(ResponseError::CoordinatorNotAvailable)
        })
        .await;
        ctx.answer(ResponseKind::SyncGroup(
            SyncGroupResponse::default()
                .with_error_code(r.error)
                .with_protocol_type(r.protocol_type)
                .with_protocol_name(r.protocol_name)
                .with_assignment(r.assignment),
        ))
    }))
}
