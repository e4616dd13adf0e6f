//! ListGroups: every coordinator's groups on this node (with members or committed offsets),
//! filtered by state (v4+) and type (v5+).

use crate::security::acl::Operation;
use crate::security::Authz;
use std::rc::Rc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use sluice_net::response::ResponseChunks;

use super::Ctx;
use crate::shard::Shard;

/// Every group with DESCRIBE on the cluster; else the groups the
/// principal may DESCRIBE.
pub async fn handle(
    shard: &Rc<Shard>,
    ctx: Ctx,
    req: ListGroupsRequest,
    authz: &Authz<'_>,
) -> ResponseChunks {
    let every = authz.cluster(Operation::Describe);
    let mut all = Vec::new();
    for target in 0..shard.shards {
        for g in shard.call_coordinators(target, |c| c.list()).await {
            all.extend(g);
        }
    }
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types: Vec<String> = req.types_filter.iter().map(|s| s.to_lowercase()).collect();
    let groups = all
        .into_iter()
        .filter(|(id, _, _)| every || authz.group(Operation::Describe, id))
        .filter(|(_, _, state)| states.is_empty() || states.contains(&state.to_lowercase()))
        .filter(|_| types.is_empty() || types.iter().any(|t| t == "classic"))
        .map(|(id, protocol_type, state)| {
            let g = ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(id)))
                .with_protocol_type(StrBytes::from_string(protocol_type));
            let g = if ctx.version >= 4 {
                g.with_group_state(StrBytes::from_static_str(state))
            } else {
                g
            };
            if ctx.version >= 5 {
                g.with_group_type(StrBytes::from_static_str("classic"))
            } else {
                g
            }
        })
        .collect();
    ctx.answer(ResponseKind::ListGroups(
        ListGroupsResponse::default().with_groups(groups),
    ))
}
