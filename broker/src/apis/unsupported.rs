//! Answers to requests for APIs this broker does not serve (they are not
//! in its ApiVersions answer, but some clients send them anyway): an error
//! in the response's own error field (UNSUPPORTED_VERSION), so the client
//! sees why instead of a dropped connection. APIs whose response has no
//! top-level error field get `None`: the connection is closed, with that
//! reason logged.

use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;
use sluice_net::request::Request;
use sluice_net::response::{encode_response, ResponseChunks};

use super::Ctx;

pub fn answer(req: Request) -> Option<ResponseChunks> {
    let ctx = Ctx {
        api_key: req.api_key,
        version: req.version,
        correlation_id: req.header.correlation_id,
        listener: 0,
    };
    let unsupported = ResponseError::UnsupportedVersion.code();
    macro_rules! top_level {
        ($($kind:ident => $resp:ident),* $(,)?) => {
            match req.body {
                $(RequestKind::$kind(_) => {
                    ResponseKind::$kind($resp::default().with_error_code(unsupported))
                })*
                _ => return None,
            }
        };
    }
    let body = top_level! {
        EndTxn => EndTxnResponse,
        AddOffsetsToTxn => AddOffsetsToTxnResponse,
        GetTelemetrySubscriptions => GetTelemetrySubscriptionsResponse,
        PushTelemetry => PushTelemetryResponse,
        ConsumerGroupHeartbeat => ConsumerGroupHeartbeatResponse,
    };
    // A response whose error field does not exist at this version does
    // not encode: then there is no way to answer, and the caller closes.
    encode_response(ctx.correlation_id, ctx.api_key, ctx.version, &body)
        .ok()
        .map(ResponseChunks::single)
}
