//! An asynchronous producer for glommio executors: records are batched per
//! partition into v2 record batches, sent to each partition's leader with
//! up to `max_in_flight` Produce requests outstanding per connection, and
//! acknowledged through a callback with the stamps the caller attached to
//! each record.
//!
//! A batch is due when it is full or has been open for `linger`. A due
//! batch goes out as soon as its connection has room; while the
//! connection has `max_in_flight` requests outstanding it stays open and
//! keeps taking records, as the Kafka clients' accumulators do, so a short
//! linger costs batching only while the broker keeps up. Only a record
//! that does not fit a batch still waiting makes the caller wait.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::io::{ReadHalf, WriteHalf};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use glommio::task::JoinHandle;
use kafka_protocol::messages::{ApiKey, ProduceResponse, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, StrBytes};

use crate::records::{BatchBuilder, Compression, RecordsError};

/// The error an acknowledgement carries when the connection failed (not a
/// Kafka error code).
pub const CONNECTION_FAILED: i16 = i16::MIN;

/// A record's bytes beyond its key and value, at most (length, attributes,
/// deltas, key and value lengths, header count).
const RECORD_OVERHEAD_MAX: usize = 5 + 1 + 10 + 5 + 5 + 5 + 1;

/// How soon `send_lingering` asks to be called again while a due batch
/// waits for room on its connection.
const WINDOW_RECHECK: Duration = Duration::from_micros(20);

/// The most a new batch buffer reserves up front.
const fn limits_batch_capacity() -> usize {
    16 << 20
}

/// The Produce version this producer speaks (v9: flexible, topic names).
pub const PRODUCE_VERSION: i16 = 9;

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// 0, 1 or -1 (all).
    pub acks: i16,
    pub batch_bytes: usize,
    pub linger: Duration,
    pub max_in_flight: usize,
    pub compression: Compression,
    pub timeout_ms: i32,
}

/// The answer for one batch.
#[derive(Debug)]
pub struct Ack {
    pub partition: i32,
    /// Kafka error code (0: stored); `CONNECTION_FAILED` when the
    /// connection failed before the answer came.
    pub error: i16,
    /// The base offset the broker gave the batch (-1 with acks=0 or an
    /// error).
    pub base_offset: i64,
    /// Bytes of the batch as sent.
    pub bytes: usize,
    /// Bytes of the records' keys and values.
    pub payload_bytes: u64,
    /// The stamps given with each record, in order.
    pub stamps: Vec<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("connection to {0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}")]
    Records(#[from] RecordsError),
    #[error("{0}")]
    Protocol(String),
    #[error("partition {0} has no leader")]
    NoLeader(i32),
}

struct Open {
    builder: BatchBuilder,
    stamps: Vec<u64>,
    payload_bytes: u64,
    opened: Instant,
}

struct Sent {
    correlation_id: i32,
    partition: i32,
    bytes: usize,
    payload_bytes: u64,
    stamps: Vec<u64>,
}

/// One connection to a leader: a writer, and a task reading answers in
/// order.
struct Lane {
    addr: String,
    writer: WriteHalf<TcpStream>,
    sent: Option<LocalSender<Sent>>,
    reader: Option<JoinHandle<()>>,
    next_id: i32,
}

type AckSink = Rc<dyn Fn(Ack)>;

pub struct Producer {
    cfg: ProducerConfig,
    topic: TopicName,
    /// Leader address of every partition.
    leaders: Vec<String>,
    lanes: HashMap<String, Lane>,
    open: Vec<Option<Open>>,
    on_ack: AckSink,
    /// Set by a reader whose connection failed.
    broken: Rc<RefCell<Option<String>>>,
    batches_sent: u64,
}

impl Producer {
    /// A producer for `topic`, whose partition `p` is led by `leaders[p]`.
    /// Connections open on first use.
    pub fn new(
        cfg: ProducerConfig,
        topic: &str,
        leaders: Vec<String>,
        on_ack: impl Fn(Ack) + 'static,
    ) -> Producer {
        let n = leaders.len();
        Producer {
            cfg,
            topic: TopicName(StrBytes::from_string(topic.to_string())),
            leaders,
            lanes: HashMap::new(),
            open: (0..n).map(|_| None).collect(),
            on_ack: Rc::new(on_ack),
            broken: Rc::new(RefCell::new(None)),
            batches_sent: 0,
        }
    }

    pub fn partitions(&self) -> usize {
        self.leaders.len()
    }

    /// Points partitions at new leaders (after a metadata refresh); the
    /// next batches go there.
    pub fn set_leaders(&mut self, leaders: Vec<String>) {
        if leaders.len() == self.leaders.len() {
            self.leaders = leaders;
        }
    }

    /// Batches handed to the network so far.
    pub fn batches_sent(&self) -> u64 {
        self.batches_sent
    }

    /// Records in the open batch of `partition`.
    pub fn open_records(&self, partition: i32) -> usize {
        self.open[partition as usize]
            .as_ref()
            .map_or(0, |o| o.builder.len())
    }

    /// Adds a record; sends the partition's batch when it is full. `stamp`
    /// comes back with the acknowledgement.
    pub async fn send(
        &mut self,
        partition: i32,
        key: Option<&[u8]>,
        value: &[u8],
        ts_ms: i64,
        stamp: u64,
    ) -> Result<(), ProducerError> {
        self.send_parts(partition, key, &[value], ts_ms, stamp)
            .await
    }

    /// `send` with a value made of `parts`, copied once, into the batch.
    pub async fn send_parts(
        &mut self,
        partition: i32,
        key: Option<&[u8]>,
        parts: &[&[u8]],
        ts_ms: i64,
        stamp: u64,
    ) -> Result<(), ProducerError> {
        if let Some(e) = self.broken.borrow().clone() {
            return Err(ProducerError::Protocol(e));
        }
        let value_len: usize = parts.iter().map(|p| p.len()).sum();
        // A batch never grows past `batch_bytes` because of this record
        // (unless the record alone is bigger): the open one goes first.
        let record_bytes = value_len + key.map_or(0, |k| k.len()) + RECORD_OVERHEAD_MAX;
        if self.open[partition as usize].as_ref().is_some_and(|o| {
            !o.builder.is_empty() && o.builder.bytes() + record_bytes > self.cfg.batch_bytes
        }) {
            self.flush_partition(partition).await?;
        }
        let cap = self.cfg.batch_bytes.min(limits_batch_capacity()) + record_bytes;
        let o = self.open[partition as usize].get_or_insert_with(|| Open {
            builder: BatchBuilder::new(cap),
            stamps: Vec::new(),
            payload_bytes: 0,
            opened: Instant::now(),
        });
        o.builder.push_parts(key, parts, ts_ms);
        o.stamps.push(stamp);
        o.payload_bytes += (value_len + key.map_or(0, |k| k.len())) as u64;
        if self.due(partition) {
            self.send_if_room(partition).await?;
        }
        Ok(())
    }

    /// Whether the open batch of `partition` should go: full, or open for
    /// `linger`.
    fn due(&self, partition: i32) -> bool {
        self.open[partition as usize].as_ref().is_some_and(|o| {
            !o.builder.is_empty()
                && (o.builder.bytes() + RECORD_OVERHEAD_MAX >= self.cfg.batch_bytes
                    || o.opened.elapsed() >= self.cfg.linger)
        })
    }

    /// Sends every due batch whose connection has room; returns how long
    /// until it is worth calling again (`None` when no batch is open).
    pub async fn send_lingering(&mut self) -> Result<Option<Duration>, ProducerError> {
        let mut next: Option<Duration> = None;
        for p in 0..self.open.len() {
            let Some(o) = &self.open[p] else { continue };
            let left = if self.due(p as i32) {
                if self.send_if_room(p as i32).await? {
                    continue;
                }
                WINDOW_RECHECK
            } else {
                self.cfg.linger.saturating_sub(o.opened.elapsed())
            };
            next = Some(next.map_or(left, |n| n.min(left)));
        }
        Ok(next)
    }

    /// Sends every open batch, waiting for room where it must.
    pub async fn flush(&mut self) -> Result<(), ProducerError> {
        for p in 0..self.open.len() {
            self.flush_partition(p as i32).await?;
        }
        Ok(())
    }

    /// Sends the open batch of `partition` unless its connection has
    /// `max_in_flight` requests outstanding; true when it went (or there
    /// was nothing to send).
    async fn send_if_room(&mut self, partition: i32) -> Result<bool, ProducerError> {
        let lane = self.lane(partition).await?;
        if lane.sent.as_ref().is_some_and(|tx| tx.is_full()) {
            return Ok(false);
        }
        self.flush_partition(partition).await?;
        Ok(true)
    }

    /// The connection to the leader of `partition`, opened on first use.
    async fn lane(&mut self, partition: i32) -> Result<&mut Lane, ProducerError> {
        let addr = &self.leaders[partition as usize];
        if addr.is_empty() {
            return Err(ProducerError::NoLeader(partition));
        }
        if !self.lanes.contains_key(addr) {
            let addr = addr.clone();
            let lane = self.connect(&addr).await?;
            self.lanes.insert(addr, lane);
        }
        Ok(self
            .lanes
            .get_mut(&self.leaders[partition as usize])
            .expect("inserted"))
    }

    /// Sends the open batch of `partition`, waiting while its connection
    /// has `max_in_flight` requests outstanding.
    async fn flush_partition(&mut self, partition: i32) -> Result<(), ProducerError> {
        if self.open[partition as usize]
            .as_ref()
            .is_none_or(|o| o.builder.is_empty())
        {
            return Ok(());
        }
        let (acks, timeout_ms, compression) =
            (self.cfg.acks, self.cfg.timeout_ms, self.cfg.compression);
        let topic = self.topic.0.clone();
        // The connection first: a batch is only taken once it can go.
        self.lane(partition).await?;
        let mut o = self.open[partition as usize].take().expect("checked");
        let batch = o.builder.finish(compression)?;
        self.batches_sent += 1;
        let lane = self
            .lanes
            .get_mut(&self.leaders[partition as usize])
            .expect("opened");
        let id = lane.next_id;
        lane.next_id = lane.next_id.wrapping_add(1);
        let bytes = batch.len();
        // The request around the batch, so the batch itself is written as
        // it is (not copied into an encoded request).
        let (prefix, suffix) = produce_frame(id, &topic, partition, acks, timeout_ms, batch.len());
        let stamps = std::mem::take(&mut o.stamps);
        if acks != 0 {
            // Queued for the reader before the bytes go out; waits while
            // `max_in_flight` are outstanding.
            let sent = Sent {
                correlation_id: id,
                partition,
                bytes,
                payload_bytes: o.payload_bytes,
                stamps,
            };
            let tx = lane.sent.as_ref().expect("open lane");
            if tx.send(sent).await.is_err() {
                return Err(ProducerError::Protocol(format!(
                    "connection to {} failed",
                    lane.addr
                )));
            }
            write_frame(lane, &prefix, &batch, &suffix).await?;
        } else {
            write_frame(lane, &prefix, &batch, &suffix).await?;
            (self.on_ack)(Ack {
                partition,
                error: 0,
                base_offset: -1,
                bytes,
                payload_bytes: o.payload_bytes,
                stamps,
            });
        }
        Ok(())
    }

    async fn connect(&self, addr: &str) -> Result<Lane, ProducerError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| ProducerError::Connect(addr.to_string(), e.into()))?;
        let _ = stream.set_nodelay(true);
        let (rd, wr) = futures_lite::io::split(stream);
        let (tx, rx) = local_channel::new_bounded(self.cfg.max_in_flight.max(1));
        let reader = glommio::spawn_local(read_acks(
            addr.to_string(),
            rd,
            rx,
            self.on_ack.clone(),
            self.broken.clone(),
        ))
        .detach();
        Ok(Lane {
            addr: addr.to_string(),
            writer: wr,
            sent: Some(tx),
            reader: Some(reader),
            next_id: 0,
        })
    }

    /// Sends what is open and waits for every answer; the connections
    /// close.
    pub async fn close(mut self) -> Result<(), ProducerError> {
        let flushed = self.flush().await;
        for (_, mut lane) in self.lanes.drain() {
            drop(lane.sent.take());
            if let Some(r) = lane.reader.take() {
                r.await;
            }
            let _ = lane.writer.close().await;
        }
        flushed?;
        match self.broken.borrow().clone() {
            Some(e) => Err(ProducerError::Protocol(e)),
            None => Ok(()),
        }
    }
}

async fn write_frame(
    lane: &mut Lane,
    prefix: &[u8],
    batch: &[u8],
    suffix: &[u8],
) -> Result<(), ProducerError> {
    let addr = lane.addr.clone();
    let io = |e| ProducerError::Io(addr.clone(), e);
    if batch.len() <= SMALL_BATCH_BYTES {
        // One write for small requests.
        let mut all = Vec::with_capacity(prefix.len() + batch.len() + suffix.len());
        all.extend_from_slice(prefix);
        all.extend_from_slice(batch);
        all.extend_from_slice(suffix);
        return lane.writer.write_all(&all).await.map_err(io);
    }
    lane.writer.write_all(prefix).await.map_err(io)?;
    lane.writer.write_all(batch).await.map_err(io)?;
    lane.writer.write_all(suffix).await.map_err(io)
}

/// Batches up to this size go out in one write with their request.
const SMALL_BATCH_BYTES: usize = 16 << 10;

fn put_uvarint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push((v as u8) | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

/// A Produce v9 request for one partition, as the bytes before and after
/// its record batch of `batch_len` bytes (length prefix included).
pub fn produce_frame(
    correlation_id: i32,
    topic: &str,
    partition: i32,
    acks: i16,
    timeout_ms: i32,
    batch_len: usize,
) -> (Vec<u8>, [u8; 3]) {
    const CLIENT_ID: &str = "sluice-loadgen";
    let mut p = Vec::with_capacity(64 + topic.len());
    p.extend_from_slice(&[0, 0, 0, 0]);
    // Request header v2.
    p.extend_from_slice(&(ApiKey::Produce as i16).to_be_bytes());
    p.extend_from_slice(&PRODUCE_VERSION.to_be_bytes());
    p.extend_from_slice(&correlation_id.to_be_bytes());
    p.extend_from_slice(&(CLIENT_ID.len() as i16).to_be_bytes());
    p.extend_from_slice(CLIENT_ID.as_bytes());
    p.push(0); // header tagged fields
               // Body: no transactional id, acks, timeout, one topic, one partition.
    p.push(0);
    p.extend_from_slice(&acks.to_be_bytes());
    p.extend_from_slice(&timeout_ms.to_be_bytes());
    p.push(2);
    put_uvarint(&mut p, topic.len() as u64 + 1);
    p.extend_from_slice(topic.as_bytes());
    p.push(2);
    p.extend_from_slice(&partition.to_be_bytes());
    put_uvarint(&mut p, batch_len as u64 + 1);
    // After the batch: partition, topic and request tagged fields.
    let suffix = [0u8; 3];
    let size = (p.len() - 4 + batch_len + suffix.len()) as i32;
    p[..4].copy_from_slice(&size.to_be_bytes());
    (p, suffix)
}

/// Reads answers in request order until the producer closes the queue,
/// acknowledging each batch; on a failure every batch still queued is
/// acknowledged with `CONNECTION_FAILED`.
async fn read_acks(
    addr: String,
    mut rd: ReadHalf<TcpStream>,
    rx: LocalReceiver<Sent>,
    on_ack: AckSink,
    broken: Rc<RefCell<Option<String>>>,
) {
    let hv = ApiKey::Produce.response_header_version(PRODUCE_VERSION);
    let mut failed: Option<String> = None;
    while let Some(sent) = rx.recv().await {
        if failed.is_none() {
            match read_answer(&mut rd, hv, &sent).await {
                Ok((error, base_offset)) => {
                    on_ack(Ack {
                        partition: sent.partition,
                        error,
                        base_offset,
                        bytes: sent.bytes,
                        payload_bytes: sent.payload_bytes,
                        stamps: sent.stamps,
                    });
                    continue;
                }
                Err(e) => {
                    let e = format!("connection to {addr}: {e}");
                    *broken.borrow_mut() = Some(e.clone());
                    failed = Some(e);
                }
            }
        }
        on_ack(Ack {
            partition: sent.partition,
            error: CONNECTION_FAILED,
            base_offset: -1,
            bytes: sent.bytes,
            payload_bytes: sent.payload_bytes,
            stamps: sent.stamps,
        });
    }
}

async fn read_answer(
    rd: &mut ReadHalf<TcpStream>,
    hv: i16,
    sent: &Sent,
) -> Result<(i16, i64), String> {
    let mut len = [0u8; 4];
    rd.read_exact(&mut len).await.map_err(|e| e.to_string())?;
    let n = i32::from_be_bytes(len);
    if !(4..=crate::frame::RESPONSE_FRAME_BYTES_MAX as i32).contains(&n) {
        return Err(format!("answer of {n} bytes"));
    }
    let mut body = vec![0u8; n as usize];
    rd.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    let mut f = Bytes::from(body);
    let h = ResponseHeader::decode(&mut f, hv).map_err(|e| e.to_string())?;
    if h.correlation_id != sent.correlation_id {
        return Err(format!(
            "answer for request {} where {} was expected",
            h.correlation_id, sent.correlation_id
        ));
    }
    let r = ProduceResponse::decode(&mut f, PRODUCE_VERSION).map_err(|e| e.to_string())?;
    let p = r
        .responses
        .first()
        .and_then(|t| t.partition_responses.first())
        .ok_or("a Produce answer without the partition")?;
    Ok((p.error_code, p.base_offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn produce_request(
        topic: &TopicName,
        partition: i32,
        batch: Bytes,
        acks: i16,
        timeout_ms: i32,
    ) -> kafka_protocol::messages::ProduceRequest {
        kafka_protocol::messages::ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(timeout_ms)
            .with_topic_data(vec![
                kafka_protocol::messages::produce_request::TopicProduceData::default()
                    .with_name(topic.clone())
                    .with_partition_data(vec![
                        kafka_protocol::messages::produce_request::PartitionProduceData::default()
                            .with_index(partition)
                            .with_records(Some(batch)),
                    ]),
            ])
    }

    /// A leader on a std thread for the tests: answers each Produce with
    /// success, but holds the first answer until `go` says so (or ten
    /// seconds pass, so a producer that waits for it fails the test rather
    /// than hangs), and reports each request's record count.
    fn fake_leader(
        go: std::sync::mpsc::Receiver<()>,
        counts: std::sync::mpsc::Sender<i32>,
    ) -> String {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut first = true;
            loop {
                let mut len = [0u8; 4];
                if c.read_exact(&mut len).is_err() {
                    return;
                }
                let mut frame = vec![0u8; i32::from_be_bytes(len) as usize];
                c.read_exact(&mut frame).unwrap();
                let req =
                    crate::request::decode_request(Bytes::from(frame), |_| Some((0, 11))).unwrap();
                let kafka_protocol::messages::RequestKind::Produce(body) = req.body else {
                    panic!("not a Produce request");
                };
                let records = body.topic_data[0].partition_data[0]
                    .records
                    .clone()
                    .unwrap();
                let mut n = 0;
                crate::records::for_each_record(&records, |_| n += 1).unwrap();
                counts.send(n).unwrap();
                if std::mem::take(&mut first) {
                    let _ = go.recv_timeout(Duration::from_secs(10));
                }
                let answer = ProduceResponse::default().with_responses(vec![
                    kafka_protocol::messages::produce_response::TopicProduceResponse::default()
                        .with_name(body.topic_data[0].name.clone())
                        .with_partition_responses(vec![
                            kafka_protocol::messages::produce_response::PartitionProduceResponse::default()
                                .with_index(0),
                        ]),
                ]);
                let frame = crate::response::encode_response(
                    req.header.correlation_id,
                    ApiKey::Produce,
                    req.version,
                    &kafka_protocol::messages::ResponseKind::Produce(answer),
                )
                .unwrap();
                c.write_all(&frame).unwrap();
            }
        });
        addr
    }

    /// With no linger, a record goes at once when its connection has room;
    /// while the one request allowed in flight is unanswered, the records
    /// after it gather in one batch and the caller is not held up.
    #[test]
    fn records_gather_while_the_window_is_full() {
        let (go_tx, go_rx) = std::sync::mpsc::channel();
        let (count_tx, counts) = std::sync::mpsc::channel();
        let addr = fake_leader(go_rx, count_tx);
        let acks = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(move || async move {
                let cfg = ProducerConfig {
                    acks: 1,
                    batch_bytes: 1 << 20,
                    linger: Duration::ZERO,
                    max_in_flight: 1,
                    compression: Compression::None,
                    timeout_ms: 30_000,
                };
                let acked = Rc::new(RefCell::new(Vec::new()));
                let sink = acked.clone();
                let mut p = Producer::new(cfg, "t", vec![addr], move |a: Ack| {
                    assert_eq!(a.error, 0);
                    sink.borrow_mut().push(a.stamps);
                });
                p.send(0, None, b"first", 0, 1).await.unwrap();
                assert_eq!(p.batches_sent(), 1, "the first record goes at once");
                // The broker holds its answer: these return without it.
                for stamp in 2..=10 {
                    p.send(0, None, b"later", 0, stamp).await.unwrap();
                }
                assert_eq!(p.batches_sent(), 1);
                assert_eq!(p.open_records(0), 9);
                assert_eq!(p.send_lingering().await.unwrap(), Some(WINDOW_RECHECK));
                go_tx.send(()).unwrap();
                while p.send_lingering().await.unwrap().is_some() {
                    glommio::timer::sleep(Duration::from_micros(100)).await;
                }
                assert_eq!(p.batches_sent(), 2);
                p.close().await.unwrap();
                Rc::try_unwrap(acked).unwrap().into_inner()
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(acks, vec![vec![1], (2..=10).collect::<Vec<u64>>()]);
        assert_eq!(counts.iter().collect::<Vec<_>>(), vec![1, 9]);
    }

    /// A batch under `linger` waits for it even with room to send.
    #[test]
    fn a_lingering_batch_waits() {
        let (go_tx, go_rx) = std::sync::mpsc::channel();
        let (count_tx, counts) = std::sync::mpsc::channel();
        let addr = fake_leader(go_rx, count_tx);
        go_tx.send(()).unwrap();
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(move || async move {
                let cfg = ProducerConfig {
                    acks: -1,
                    batch_bytes: 1 << 20,
                    linger: Duration::from_secs(3600),
                    max_in_flight: 5,
                    compression: Compression::None,
                    timeout_ms: 30_000,
                };
                let mut p = Producer::new(cfg, "t", vec![addr], |_| {});
                for stamp in 0..3 {
                    p.send(0, None, b"v", 0, stamp).await.unwrap();
                }
                let left = p.send_lingering().await.unwrap().unwrap();
                assert!(left > Duration::from_secs(3000), "{left:?}");
                assert_eq!(p.batches_sent(), 0);
                p.close().await.unwrap();
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(counts.iter().collect::<Vec<_>>(), vec![3]);
    }

    /// The hand-made frame is byte for byte what the codec encodes.
    #[test]
    fn produce_frame_matches_the_codec() {
        let mut b = BatchBuilder::new(1024);
        b.push(Some(b"k"), b"value", 7);
        let batch = b.finish(Compression::None).unwrap();
        let long = "x".repeat(200);
        for (acks, topic) in [(-1i16, "t"), (1, "a-longer-topic-name"), (0, long.as_str())] {
            let want = crate::client::encode_request(
                ApiKey::Produce,
                PRODUCE_VERSION,
                42,
                "sluice-loadgen",
                &produce_request(
                    &TopicName(StrBytes::from_string(topic.to_string())),
                    3,
                    batch.clone(),
                    acks,
                    30_000,
                ),
            )
            .unwrap();
            let (prefix, suffix) = produce_frame(42, topic, 3, acks, 30_000, batch.len());
            let mut got = prefix.clone();
            got.extend_from_slice(&batch);
            got.extend_from_slice(&suffix);
            assert_eq!(got, want.to_vec(), "acks {acks} topic {topic}");
        }
    }
}
