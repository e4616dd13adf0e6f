//! An asynchronous fetcher for glommio executors: reads a set of
//! partitions of one topic from given offsets with Fetch (v11) and hands
//! every record to a callback.

use glommio::net::TcpStream;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::client::ClientError;
use crate::records::{for_each_record, RecordView};

pub const FETCH_VERSION: i16 = 11;

/// Failures: connecting, the connection, or an answer that makes no sense.
pub type FetchError = ClientError;

pub struct Fetcher {
    addr: String,
    stream: TcpStream,
    topic: TopicName,
    /// (partition, next offset)
    positions: Vec<(i32, i64)>,
    next_id: i32,
    pub max_wait_ms: i32,
    pub partition_max_bytes: i32,
}

/// What one fetch brought.
#[derive(Debug, Default)]
pub struct Fetched {
    pub records: u64,
    pub bytes: u64,
    /// (partition, error code) of partitions answered with an error.
    pub errors: Vec<(i32, i16)>,
}

impl Fetcher {
    pub async fn connect(
        addr: &str,
        topic: &str,
        positions: Vec<(i32, i64)>,
    ) -> Result<Fetcher, FetchError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| FetchError::Connect(addr.to_string(), e.into()))?;
        let _ = stream.set_nodelay(true);
        Ok(Fetcher {
            addr: addr.to_string(),
            stream,
            topic: TopicName(StrBytes::from_string(topic.to_string())),
            positions,
            next_id: 0,
            max_wait_ms: 100,
            partition_max_bytes: 4 << 20,
        })
    }

    pub fn positions(&self) -> &[(i32, i64)] {
        &self.positions
    }

    /// One Fetch: every record past each partition's position goes to
    /// `f(partition, record)`, and the positions move past them.
    pub async fn poll(
        &mut self,
        mut f: impl FnMut(i32, RecordView<'_>),
    ) -> Result<Fetched, FetchError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let req = FetchRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_max_wait_ms(self.max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(64 << 20)
            .with_isolation_level(0)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(self.topic.clone())
                .with_partitions(
                    self.positions
                        .iter()
                        .map(|(p, o)| {
                            FetchPartition::default()
                                .with_partition(*p)
                                .with_fetch_offset(*o)
                                .with_current_leader_epoch(-1)
                                .with_log_start_offset(-1)
                                .with_partition_max_bytes(self.partition_max_bytes)
                        })
                        .collect(),
                )]);
        let r: FetchResponse = crate::aio::call(
            &mut self.stream,
            &self.addr,
            ApiKey::Fetch,
            FETCH_VERSION,
            id,
            &req,
        )
        .await?;
        let mut out = Fetched::default();
        if r.error_code != 0 {
            out.errors.push((-1, r.error_code));
            return Ok(out);
        }
        for t in &r.responses {
            for p in &t.partitions {
                if p.error_code != 0 {
                    out.errors.push((p.partition_index, p.error_code));
                    continue;
                }
                let Some(records) = &p.records else { continue };
                let Some(pos) = self
                    .positions
                    .iter_mut()
                    .find(|(q, _)| *q == p.partition_index)
                else {
                    continue;
                };
                let from = pos.1;
                let part = p.partition_index;
                let next = for_each_record(records, |r| {
                    if r.offset >= from {
                        out.records += 1;
                        out.bytes += r.value.map_or(0, |v| v.len()) as u64
                            + r.key.map_or(0, |k| k.len()) as u64;
                        f(part, r);
                    }
                })
                .map_err(|e| FetchError::Protocol(e.to_string()))?;
                if let Some(next) = next {
                    pos.1 = pos.1.max(next);
                }
            }
        }
        Ok(out)
    }
}
