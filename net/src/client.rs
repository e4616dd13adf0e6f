//! A small blocking Kafka client for tools (the `sluice` admin CLI): one
//! connection, ApiVersions negotiated on connect, one request at a time.
//! It talks to any Kafka-compatible broker. Not for shard threads: it
//! blocks.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("connection to {0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}")]
    Protocol(String),
    #[error("the broker at {addr} does not serve {api:?} at any version this tool speaks ({ours:?}; it serves {theirs:?})")]
    Unsupported {
        addr: String,
        api: ApiKey,
        ours: (i16, i16),
        theirs: Option<(i16, i16)>,
    },
}

/// A whole request frame (length prefix, header, body).
pub fn encode_request<R: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: &'static str,
    body: &R,
) -> Result<BytesMut, ClientError> {
    let mut b = BytesMut::new();
    b.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(client_id)))
        .encode(&mut b, api.request_header_version(version))
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    body.encode(&mut b, version)
        .map_err(|e| ClientError::Protocol(format!("{api:?} v{version}: {e}")))?;
    let len = (b.len() - 4) as i32;
    b[..4].copy_from_slice(&len.to_be_bytes());
    Ok(b)
}

pub struct Client {
    addr: String,
    stream: TcpStream,
    next_id: i32,
    versions: HashMap<i16, (i16, i16)>,
}

impl Client {
    /// Connects and asks which versions the broker serves.
    pub fn connect(addr: &str, timeout: Duration) -> Result<Client, ClientError> {
        let sock = addr
            .to_socket_addrs()
            .map_err(|e| ClientError::Connect(addr.into(), e))?
            .next()
            .ok_or_else(|| {
                ClientError::Connect(addr.into(), std::io::Error::other("no address"))
            })?;
        let stream = TcpStream::connect_timeout(&sock, timeout)
            .map_err(|e| ClientError::Connect(addr.into(), e))?;
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(timeout.max(Duration::from_secs(35))))
            .map_err(|e| ClientError::Io(addr.into(), e))?;
        let mut c = Client {
            addr: addr.into(),
            stream,
            next_id: 1,
            versions: HashMap::new(),
        };
        let r: ApiVersionsResponse = c.call_at(
            ApiKey::ApiVersions,
            3,
            &ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("sluice"))
                .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION"))),
        )?;
        if r.error_code != 0 {
            return Err(ClientError::Protocol(format!(
                "ApiVersions failed with error {}",
                r.error_code
            )));
        }
        c.versions = r
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(c)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The highest version of `api` both sides speak, within `ours`.
    pub fn version(&self, api: ApiKey, ours: (i16, i16)) -> Result<i16, ClientError> {
        let theirs = self.versions.get(&(api as i16)).copied();
        match theirs {
            Some((lo, hi)) if lo <= ours.1 && ours.0 <= hi => Ok(hi.min(ours.1)),
            _ => Err(ClientError::Unsupported {
                addr: self.addr.clone(),
                api,
                ours,
                theirs,
            }),
        }
    }

    /// Sends one request at `version` and reads its answer.
    pub fn call_at<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Req,
    ) -> Result<Resp, ClientError> {
        let io = |e| ClientError::Io(self.addr.clone(), e);
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let b = encode_request(api, version, id, "sluice", req)?;
        self.stream.write_all(&b).map_err(io)?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).map_err(io)?;
        let n = i32::from_be_bytes(len);
        if !(4..=crate::frame::RESPONSE_FRAME_BYTES_MAX as i32).contains(&n) {
            return Err(ClientError::Protocol(format!("answer of {n} bytes")));
        }
        let mut body = vec![0u8; n as usize];
        self.stream.read_exact(&mut body).map_err(io)?;
        let mut f = Bytes::from(body);
        let hv = if api == ApiKey::ApiVersions {
            0
        } else {
            api.response_header_version(version)
        };
        let h =
            ResponseHeader::decode(&mut f, hv).map_err(|e| ClientError::Protocol(e.to_string()))?;
        if h.correlation_id != id {
            return Err(ClientError::Protocol(format!(
                "answer for request {} where {id} was expected",
                h.correlation_id
            )));
        }
        Resp::decode(&mut f, version)
            .map_err(|e| ClientError::Protocol(format!("{api:?} v{version} answer: {e}")))
    }

    /// Negotiates the version within `ours` and calls.
    pub fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        ours: (i16, i16),
        req: impl FnOnce(i16) -> Req,
    ) -> Result<(i16, Resp), ClientError> {
        let v = self.version(api, ours)?;
        let r = self.call_at(api, v, &req(v))?;
        Ok((v, r))
    }
}
