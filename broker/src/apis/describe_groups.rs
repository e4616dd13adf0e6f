//! DescribeGroups: state, protocol, and each member's id, client, host,
//! metadata and assignment. An unknown group is described as Dead, as
//! Kafka does.

use crate::security::acl::Operation;
use crate::security::Authz;
use std::rc::Rc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_net::response::ResponseChunks;

use super::Ctx;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: Ctx,
    req: DescribeGroupsRequest,
    authz: &Authz<'_>,
) -> ResponseChunks {
    let s = StrBytes::from_string;
    let mut out = Vec::new();
    for id in req.groups {
        let group = id.0.to_string();
        let d = DescribedGroup::default()
            .with_group_id(id)
            .with_authorized_operations(i32::MIN);
        if !authz.group(Operation::Describe, &group) {
            out.push(d.with_error_code(ResponseError::GroupAuthorizationFailed.code()));
            continue;
        }
        let owner = shard.group_owner(&group);
        let view = shard
            .call_coordinator(owner, move |c| async move { c.describe(&group) })
            .await;
        out.push(match view {
            Err(_) => d.with_error_code(ResponseError::CoordinatorNotAvailable.code()),
            Ok(None) => d.with_group_state(StrBytes::from_static_str("Dead")),
            Ok(Some(v)) => d
                .with_group_state(StrBytes::from_static_str(v.state))
                .with_protocol_type(s(v.protocol_type))
                .with_protocol_data(s(v.protocol))
                .with_members(
                    v.members
                        .into_iter()
                        .map(|m| {
                            let dm = DescribedGroupMember::default()
                                .with_member_id(s(m.member_id))
                                .with_client_id(s(m.client_id))
                                .with_client_host(s(m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment);
                            if ctx.version >= 4 {
                                dm.with_group_instance_id(m.instance_id.map(s))
                            } else {
                                dm
                            }
                        })
                        .collect(),
                ),
        });
    }
    ctx.answer(ResponseKind::DescribeGroups(
        DescribeGroupsResponse::default().with_groups(out),
    ))
}
