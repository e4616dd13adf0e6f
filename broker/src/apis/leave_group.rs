//! LeaveGroup: members leave (v3+: several, by member or instance id);
//! the group rebalances without them.

use std::rc::Rc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_net::response::ResponseChunks;

use super::Ctx;
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, ctx: Ctx, req: LeaveGroupRequest) -> ResponseChunks {
    let group = req.group_id.0.to_string();
    let members: Vec<(String, Option<String>)> = if ctx.version >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let n = members.len();
    let asked = members.clone();
    let owner = shard.group_owner(&group);
    let codes = shard
        .call_coordinator(owner, move |c| async move { c.leave(&group, &members) })
        .await
        .unwrap_or_else(|_| vec![ResponseError::CoordinatorNotAvailable.code(); n]);
    let out = if ctx.version >= 3 {
        LeaveGroupResponse::default().with_members(
            asked
                .into_iter()
                .zip(&codes)
                .map(|((id, instance), &code)| {
                    MemberResponse::default()
                        .with_member_id(StrBytes::from_string(id))
                        .with_group_instance_id(instance.map(StrBytes::from_string))
                        .with_error_code(code)
                })
                .collect(),
        )
    } else {
        LeaveGroupResponse::default().with_error_code(codes.first().copied().unwrap_or(0))
    };
    ctx.answer(ResponseKind::LeaveGroup(out))
}
