//! Answers to requests for APIs this broker does not serve (they are not
//! in its ApiVersions answer, but some clients send them anyway): an error
//! in the response's own error field, so the client sees why instead of a
//! dropped connection. FindCoordinator says the coordinator is not
//! available (consumer groups are not served yet); the others say
//! UNSUPPORTED_VERSION. APIs whose response has no top-level error field
//! get `None`: the connection is closed, with that reason logged.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_net::request::Request;
use sluice_net::response::{encode_response, ResponseChunks};

use super::Ctx;

pub fn answer(req: Request) -> Option<ResponseChunks> {
    let ctx = Ctx {
        api_key: req.api_key,
        version: req.version,
        correlation_id: req.header.correlation_id,
    };
    let unsupported = ResponseError::UnsupportedVersion.code();
    macro_rules! top_level {
        ($($kind:ident => $resp:ident),* $(,)?) => {
            match req.body {
                RequestKind::FindCoordinator(r) => {
                    let code = ResponseError::CoordinatorNotAvailable.code();
                    let message = StrBytes::from_static_str("consumer groups are not served by this broker yet");
                    let out = FindCoordinatorResponse::default();
                    // v4 answers per key; earlier versions have one answer.
                    let out = if ctx.version >= 4 {
                        out.with_coordinators(
                            r.coordinator_keys
                                .into_iter()
                                .map(|k| {
                                    Coordinator::default()
                                        .with_key(k)
                                        .with_node_id(BrokerId(-1))
                                        .with_port(-1)
                                        .with_error_code(code)
                                        .with_error_message(Some(message.clone()))
                                })
                                .collect(),
                        )
                    } else {
                        let out = out.with_error_code(code).with_node_id(BrokerId(-1)).with_port(-1);
                        if ctx.version >= 1 {
                            out.with_error_message(Some(message))
                        } else {
                            out
                        }
                    };
                    ResponseKind::FindCoordinator(out)
                }
                $(RequestKind::$kind(_) => {
                    ResponseKind::$kind($resp::default().with_error_code(unsupported))
                })*
                _ => return None,
            }
        };
    }
    let body = top_level! {
        JoinGroup => JoinGroupResponse,
        SyncGroup => SyncGroupResponse,
        Heartbeat => HeartbeatResponse,
        LeaveGroup => LeaveGroupResponse,
        ListGroups => ListGroupsResponse,
        OffsetFetch => OffsetFetchResponse,
        SaslHandshake => SaslHandshakeResponse,
        SaslAuthenticate => SaslAuthenticateResponse,
        DescribeCluster => DescribeClusterResponse,
        EndTxn => EndTxnResponse,
        AddOffsetsToTxn => AddOffsetsToTxnResponse,
        GetTelemetrySubscriptions => GetTelemetrySubscriptionsResponse,
        PushTelemetry => PushTelemetryResponse,
        ConsumerGroupHeartbeat => ConsumerGroupHeartbeatResponse,
        DescribeAcls => DescribeAclsResponse,
    };
    // A response whose error field does not exist at this version does
    // not encode: then there is no way to answer, and the caller closes.
    encode_response(ctx.correlation_id, ctx.api_key, ctx.version, &body)
        .ok()
        .map(ResponseChunks::single)
}
