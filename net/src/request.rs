//! Request decoding: header first (its version depends on the API and the
//! API's version), then the body through the `kafka-protocol` codecs.
//!
//! What can be answered is told apart from what can only close the
//! connection: a request whose API key and correlation id are known gets an
//! error response; a frame too short for a header, or an API key no codec
//! knows, cannot be answered (there is no response schema to answer in).

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::Decodable;

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    pub api_key: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: RequestKind,
}

/// Why a frame did not yield a request.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Too short to hold the fixed header fields: close the connection.
    #[error("frame of {0} bytes cannot hold a request header")]
    Truncated(usize),
    /// No codec knows this API: close the connection.
    #[error("unknown API key {api_key} (correlation id {correlation_id})")]
    UnknownApi { api_key: i16, correlation_id: i32 },
    /// A version this broker does not serve. ApiVersions is answered in v0
    /// with UNSUPPORTED_VERSION and the supported ranges (KIP-511), so the
    /// client retries at a version both know.
    #[error("{api_key:?} v{version} is not supported (correlation id {correlation_id})")]
    UnsupportedVersion {
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
    },
    /// The header or body does not decode at the version it claims.
    #[error(
        "malformed {api_key:?} v{version} request (correlation id {correlation_id}): {reason}"
    )]
    Malformed {
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
        reason: String,
    },
}

impl RequestError {
    /// The correlation id, where one is known.
    pub fn correlation_id(&self) -> Option<i32> {
        match self {
            RequestError::Truncated(_) => None,
            RequestError::UnknownApi { correlation_id, .. }
            | RequestError::UnsupportedVersion { correlation_id, .. }
            | RequestError::Malformed { correlation_id, .. } => Some(*correlation_id),
        }
    }
}

/// Decodes one request frame (without its length prefix). `supported`
/// gives the version range this broker serves for an API, or `None`.
pub fn decode_request(
    frame: Bytes,
    supported: impl Fn(ApiKey) -> Option<(i16, i16)>,
) -> Result<Request, RequestError> {
    if frame.len() < 8 {
        return Err(RequestError::Truncated(frame.len()));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes(frame[4..8].try_into().unwrap());
    let api_key = ApiKey::try_from(raw_key).map_err(|_| RequestError::UnknownApi {
        api_key: raw_key,
        correlation_id,
    })?;
    let codec = api_key.valid_versions();
    let served = supported(api_key).filter(|&(lo, hi)| (lo..=hi).contains(&version));
    if served.is_none() || version < codec.min || version > codec.max {
        return Err(RequestError::UnsupportedVersion {
            api_key,
            version,
            correlation_id,
        });
    }
    let malformed = |reason: String| RequestError::Malformed {
        api_key,
        version,
        correlation_id,
        reason,
    };
    let mut buf = frame;
    let header_version = api_key.request_header_version(version);
    let header = RequestHeader::decode(&mut buf, header_version)
        .map_err(|e| malformed(format!("header v{header_version}: {e}")))?;
    // The codecs report bad input as errors; a panic inside one is caught
    // here, and the allocation guard keeps a bogus element count from
    // aborting the process (see `guard`), so a malformed frame can never
    // take a shard down.
    let body = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        crate::guard::decoding_untrusted(|| RequestKind::decode(api_key, &mut buf, version))
    }))
    .map_err(|_| malformed("the decoder panicked".into()))?
    .map_err(|e| malformed(e.to_string()))?;
    // Bytes after the body are ignored, as Kafka brokers do: librdkafka
    // 2.x sends a few (an empty tagged-field section it writes twice) in
    // Metadata v12 requests.
    Ok(Request {
        api_key,
        version,
        header,
        body,
    })
}
