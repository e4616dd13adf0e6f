//! A minimal blocking Kafka client over `kafka-protocol`'s codecs, for
//! tests that need exact control of requests (sequence numbers, pipelining,
//! bad frames) that a full client would not give.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

pub struct Wire {
    pub s: TcpStream,
    next_id: i32,
}

impl Wire {
    pub fn connect(port: u16) -> Wire {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Wire { s, next_id: 1 }
    }

    /// Encodes a whole request frame.
    pub fn frame<R: Encodable>(api: ApiKey, version: i16, id: i32, body: &R) -> Vec<u8> {
        sluice_net::client::encode_request(api, version, id, "wire-test", body)
            .unwrap()
            .to_vec()
    }

    /// Sends a request; returns its correlation id.
    pub fn send<R: Encodable>(&mut self, api: ApiKey, version: i16, body: &R) -> i32 {
        let id = self.next_id;
        self.next_id += 1;
        self.s
            .write_all(&Wire::frame(api, version, id, body))
            .unwrap();
        id
    }

    /// Reads one response frame: (correlation id, body bytes).
    pub fn recv_raw(&mut self, api: ApiKey, version: i16) -> std::io::Result<(i32, Bytes)> {
        read_response(&mut self.s, api, version)
    }

    pub fn recv<T: Decodable>(&mut self, api: ApiKey, version: i16) -> (i32, T) {
        let (id, mut b) = self.recv_raw(api, version).unwrap();
        (id, T::decode(&mut b, version).unwrap())
    }

    /// Sends a request and reads its answer.
    pub fn call<R: Encodable, T: Decodable>(&mut self, api: ApiKey, version: i16, body: &R) -> T {
        let id = self.send(api, version, body);
        let (got, t) = self.recv(api, version);
        assert_eq!(got, id, "answers come in request order");
        t
    }

    /// True when the broker closed the connection.
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.s.read(&mut b), Ok(0) | Err(_))
    }
}

/// Reads one response frame from any stream (a socket, or TLS over
/// one): (correlation id, body bytes).
pub fn read_response(
    s: &mut impl Read,
    api: ApiKey,
    version: i16,
) -> std::io::Result<(i32, Bytes)> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body)?;
    let mut b = Bytes::from(body);
    let hv = if api == ApiKey::ApiVersions {
        0
    } else {
        api.response_header_version(version)
    };
    let h = ResponseHeader::decode(&mut b, hv).unwrap();
    Ok((h.correlation_id, b))
}

pub fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

pub fn create_topic(w: &mut Wire, topic: &str, partitions: i32) {
    let r: CreateTopicsResponse = w.call(
        ApiKey::CreateTopics,
        7,
        &CreateTopicsRequest::default()
            .with_topics(vec![create_topics_request::CreatableTopic::default()
                .with_name(name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(1)])
            .with_timeout_ms(10_000),
    );
    assert_eq!(r.topics[0].error_code, 0, "{r:?}");
}

/// A produce request for one partition.
pub fn produce_request(topic: &str, partition: i32, acks: i16, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![
                produce_request::PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(records)),
            ])])
}

/// Produces one partition's records; returns (error code, base offset).
pub fn produce(w: &mut Wire, topic: &str, partition: i32, records: Bytes) -> (i16, i64) {
    let r: ProduceResponse = w.call(
        ApiKey::Produce,
        9,
        &produce_request(topic, partition, -1, records),
    );
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// A fetch request for one partition.
pub fn fetch_request(
    topic: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: i32,
    partition_max_bytes: i32,
) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(50 << 20)
        .with_topics(vec![fetch_request::FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![fetch_request::FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(partition_max_bytes)])])
}

/// ListOffsets for one partition at `timestamp` (-1 latest, -2 earliest).
pub fn list_offset(w: &mut Wire, topic: &str, partition: i32, timestamp: i64) -> i64 {
    let r: ListOffsetsResponse = w.call(
        ApiKey::ListOffsets,
        6,
        &list_offsets_request(topic, partition, timestamp),
    );
    let p = &r.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.offset
}

pub fn list_offsets_request(topic: &str, partition: i32, timestamp: i64) -> ListOffsetsRequest {
    ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![
                list_offsets_request::ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_timestamp(timestamp),
            ])])
}

pub fn latest_offset(w: &mut Wire, topic: &str, partition: i32) -> i64 {
    list_offset(w, topic, partition, -1)
}

/// An uncompressed batch of `count` records, marked with a producer id,
/// epoch and first sequence.
pub fn idempotent_batch(count: usize, producer_id: i64, epoch: i16, sequence: i32) -> Bytes {
    use sluice_storage::batch::build;
    let mut b = build::uniform(count, 20, 1_700_000_000_000).to_vec();
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&sequence.to_be_bytes());
    build::reseal(&mut b);
    Bytes::from(b)
}

/// A consumer's group subscription (ConsumerProtocolSubscription v0):
/// one topic, no user data.
pub fn subscription(topic: &str) -> Bytes {
    let mut meta = Vec::new();
    meta.extend_from_slice(&0i16.to_be_bytes());
    meta.extend_from_slice(&1i32.to_be_bytes());
    meta.extend_from_slice(&(topic.len() as i16).to_be_bytes());
    meta.extend_from_slice(topic.as_bytes());
    meta.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(meta)
}
