//! FindCoordinator: this broker coordinates every group (one node; inside
//! it, the group's shard is found by hash and requests are forwarded).
//! Transaction coordinators are not served.

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

pub fn handle(shard: &Rc<Shard>, ctx: Ctx, req: FindCoordinatorRequest) -> ResponseChunks {
    let node = BrokerId(shard.cfg.node_id);
    let host = StrBytes::from_string(shard.cfg.advertised_host.clone());
    let port = i32::from(shard.cfg.advertised_port);
    let refused = req.key_type != KEY_GROUP;
    let out = FindCoordinatorResponse::default();
    let out = if ctx.version >= 4 {
        out.with_coordinators(
            req.coordinator_keys
                .into_iter()
                .map(|key| {
                    let c = Coordinator::default().with_key(key);
                    if refused {
                        c.with_node_id(BrokerId(-1))
                            .with_port(-1)
                            .with_error_code(ResponseError::CoordinatorNotAvailable.code())
                            .with_error_message(Some(StrBytes::from_static_str(
                                "only group coordinators are served",
                            )))
                    } else {
                        c.with_node_id(node).with_host(host.clone()).with_port(port)
                    }
                })
                .collect(),
        )
    } else if refused {
        out.with_error_code(ResponseError::CoordinatorNotAvailable.code())
            .with_node_id(BrokerId(-1))
            .with_port(-1)
    } else {
        out.with_node_id(node).with_host(host).with_port(port)
    };
    ctx.answer(ResponseKind::FindCoordinator(out))
}
