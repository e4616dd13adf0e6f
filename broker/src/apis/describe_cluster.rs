//! DescribeCluster: the nodes of the cluster and its controller (for a
//! cluster of one, this broker alone, its own controller).

use std::rc::Rc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_net::response::ResponseChunks;

use super::Ctx;
use crate::shard::Shard;

pub fn handle(shard: &Rc<Shard>, ctx: Ctx, req: DescribeClusterRequest) -> ResponseChunks {
    let nodes = shard.nodes(ctx.listener);
    let mut body = DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(nodes.cluster_id))
        .with_controller_id(BrokerId(nodes.controller))
        .with_endpoint_type(1)
        .with_cluster_authorized_operations(i32::MIN)
        .with_brokers(
            nodes
                .brokers
                .into_iter()
                .map(|(id, host, port)| {
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(id))
                        .with_host(StrBytes::from_string(host))
                        .with_port(port)
                })
                .collect(),
        );
    // Only brokers are described; asking for the controllers' endpoints
    // (KIP-919) is not served.
    if ctx.version >= 1 && req.endpoint_type != 1 {
        body = body
            .with_brokers(vec![])
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(StrBytes::from_static_str(
                "only endpoint type 1 (brokers) is described",
            )));
    }
    ctx.answer(ResponseKind::DescribeCluster(body))
}
