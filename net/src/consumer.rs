//! An asynchronous fetcher for glommio executors: reads a set of
//! partitions of one topic from given offsets with Fetch (v11) and hands
//! every record to a callback, with the next Fetch already sent.

use bytes::Bytes;
use glommio::net::TcpStream;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::client::ClientError;
use crate::records::{for_each_record, next_offset, RecordView};

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
    /// The correlation id of the fetch sent ahead (for the positions as
    /// they are now), whose answer is not read yet.
    ahead: Option<i32>,
    /// The last answer's frame, reused as the next receive buffer.
    spare: Option<Bytes>,
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
            ahead: None,
            spare: None,
        })
    }

    pub fn positions(&self) -> &[(i32, i64)] {
        &self.positions
    }

    /// Sends a Fetch from `positions`; returns its correlation id.
    async fn send(&mut self, positions: &[(i32, i64)]) -> Result<i32, FetchError> {
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
                    positions
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
        crate::aio::send(
            &mut self.stream,
            &self.addr,
            ApiKey::Fetch,
            FETCH_VERSION,
            id,
            &req,
        )
        .await?;
        Ok(id)
    }

    /// One Fetch: every record past each partition's position goes to
    /// `f(partition, record)`, and the positions move past them.
    ///
    /// Like a client that prefetches, it sends the next Fetch (from where
    /// this answer ends, read off its batch headers) before it hands this
    /// answer's records to `f`, so the broker works on the next answer
    /// while this one is read. An answer with an error sends nothing ahead.
    pub async fn poll(
        &mut self,
        mut f: impl FnMut(i32, RecordView<'_>),
    ) -> Result<Fetched, FetchError> {
        let id = match self.ahead.take() {
            Some(id) => id,
            None => {
                let positions = self.positions.clone();
                self.send(&positions).await?
            }
        };
        let r: FetchResponse = crate::aio::receive(
            &mut self.stream,
            &self.addr,
            ApiKey::Fetch,
            FETCH_VERSION,
            id,
            &mut self.spare,
        )
        .await?;
        let mut out = Fetched::default();
        if r.error_code != 0 {
            out.errors.push((-1, r.error_code));
            return Ok(out);
        }
        let protocol = |e: crate::records::RecordsError| FetchError::Protocol(e.to_string());
        let mut ahead = self.positions.clone();
        let mut clean = true;
        for t in &r.responses {
            for p in &t.partitions {
                clean &= p.error_code == 0;
                let Some(records) = p.records.as_ref().filter(|_| p.error_code == 0) else {
                    continue;
                };
                if let (Some(next), Some(pos)) = (
                    next_offset(records).map_err(protocol)?,
                    ahead.iter_mut().find(|(q, _)| *q == p.partition_index),
                ) {
                    pos.1 = pos.1.max(next);
                }
            }
        }
        if clean {
            self.ahead = Some(self.send(&ahead).await?);
        }
        for t in &r.responses {
            for p in &t.partitions {
                if p.error_code != 0 {
                    out.errors.push((p.partition_index, p.error_code));
                    continue;
                }
                let Some(records) = &p.records else { continue };
                let Some(&(part, from)) =
                    self.positions.iter().find(|(q, _)| *q == p.partition_index)
                else {
                    continue;
                };
                for_each_record(records, |r| {
                    if r.offset >= from {
                        out.records += 1;
                        out.bytes += r.value.map_or(0, |v| v.len()) as u64
                            + r.key.map_or(0, |k| k.len()) as u64;
                        f(part, r);
                    }
                })
                .map_err(protocol)?;
            }
        }
        // Every record up to where each answer ends was handed over.
        self.positions = ahead;
        Ok(out)
    }
}
