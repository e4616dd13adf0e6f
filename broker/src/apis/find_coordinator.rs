//! FindCoordinator: a single broker coordinates every group; in a cluster
//! a group's coordinator is the node leading its partition of the
//! internal offsets topic (`groups::OFFSETS_TOPIC`), named by every node
//! alike. Inside the node the group's shard is found from that partition
//! (or by hash on a single broker) and requests are forwarded there.
//! Transaction coordinators are not served.

use crate::security::acl::Operation;
use crate::security::Authz;
use std::rc::Rc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_net::response::ResponseChunks;

use super::Ctx;
use crate::shard::Shard;

const KEY_GROUP: i8 = 0;

/// The node coordinating `group`: (id, host, port), or why there is none.
fn coordinator(
    shard: &Shard,
    group: &str,
    listener: usize,
) -> Result<(i32, String, i32), &'static str> {
    use crate::groups::{offsets_partition, OFFSETS_TOPIC};
    if shard.cfg.cluster.is_none() {
        return Ok(shard.own_endpoint(listener));
    }
    let meta = shard.meta();
    let t = meta
        .topic(OFFSETS_TOPIC)
        .ok_or("the cluster's offsets topic is not created yet")?;
    let n = t
        .roles
        .get(offsets_partition(group, t.owners.len()) as usize)
        .map(|r| r.leader_id)
        .filter(|&l| l >= 0)
        .ok_or("the group's offsets partition has no leader")?;
    let view = shard.cluster_view().ok_or("the cluster is forming")?;
    let info = view
        .state
        .nodes
        .get(&n)
        .ok_or("the group's coordinator has not joined the cluster yet")?;
    let protocol = shard.cfg.listeners[listener].protocol;
    let (host, port) = crate::security::listener::endpoint_for(&info.kafka, protocol)
        .ok_or("the group's coordinator has no listener of this protocol")?;
    Ok((n, host, port))
}

/// DESCRIBE on each group asked about.
pub fn handle(
    shard: &Rc<Shard>,
    ctx: Ctx,
    req: FindCoordinatorRequest,
    authz: &Authz<'_>,
) -> ResponseChunks {
    let refused = req.key_type != KEY_GROUP;
    let unavailable = ResponseError::CoordinatorNotAvailable.code();
    let find = |key: &str| -> Result<(i32, String, i32), (i16, &'static str)> {
        if refused {
            return Err((unavailable, "only group coordinators are served"));
        }
        if !authz.group(Operation::Describe, key) {
            return Err((
                ResponseError::GroupAuthorizationFailed.code(),
                "DESCRIBE on the group is not allowed",
            ));
        }
        coordinator(shard, key, ctx.listener).map_err(|why| (unavailable, why))
    };
    let out = FindCoordinatorResponse::default();
    let out = if ctx.version >= 4 {
        out.with_coordinators(
            req.coordinator_keys
                .into_iter()
                .map(|key| {
                    let found = find(&key);
                    let c = Coordinator::default().with_key(key);
                    match found {
                        Ok((n, host, port)) => c
                            .with_node_id(BrokerId(n))
                            .with_host(StrBytes::from_string(host))
                            .with_port(port),
                        Err((code, why)) => c
                            .with_node_id(BrokerId(-1))
                            .with_port(-1)
                            .with_error_code(code)
                            .with_error_message(Some(StrBytes::from_static_str(why))),
                    }
                })
                .collect(),
        )
    } else {
        match find(&req.key) {
            Ok((n, host, port)) => out
                .with_node_id(BrokerId(n))
                .with_host(StrBytes::from_string(host))
                .with_port(port),
            Err((code, why)) => out
                .with_error_code(code)
                // The message field exists from v1.
                .with_error_message((ctx.version >= 1).then(|| StrBytes::from_static_str(why)))
                .with_node_id(BrokerId(-1))
                .with_port(-1),
        }
    };
    ctx.answer(ResponseKind::FindCoordinator(out))
}
