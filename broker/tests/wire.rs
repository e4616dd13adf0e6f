//! The broker at the protocol level, where exact requests matter:
//! idempotent retries and sequence gaps, long-poll fetches woken by new
//! data, acks=0, pipelining, requests of every size arriving in pieces,
//! IncrementalAlterConfigs, and bad input, each
//! case followed by a normal client being served.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::wire::*;
use common::{free_port, tempdir, Broker};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::ResponseError;

const SHARDS: usize = 2;

/// A broker on two shards with one topic, and a connection to it.
fn start_with_topic(topic: &str, partitions: i32) -> (tempfile::TempDir, Broker, u16, Wire) {
    let data = tempdir();
    let port = free_port();
    let b = Broker::start_on(data.path(), SHARDS, port, &[]);
    let mut w = Wire::connect(port);
    create_topic(&mut w, topic, partitions);
    (data, b, port, w)
}

fn init_producer_id(w: &mut Wire) -> i64 {
    let r: InitProducerIdResponse = w.call(
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000),
    );
    assert_eq!(r.error_code, 0);
    assert_eq!(r.producer_epoch, 0);
    r.producer_id.0
}

// A retried batch (same producer, epoch and sequences) is answered with
// the offsets it got the first time and is not written again, also after
// a clean restart and after kill -9; a sequence gap is refused. Producer
// ids are never handed out twice, across restarts too.
#[test]
fn idempotent_retries_are_not_written_twice() {
    let (data, mut b, port, mut w) = start_with_topic("idem", 2);
    let pid = init_producer_id(&mut w);
    let other = init_producer_id(&mut w);
    assert_ne!(pid, other);
    for p in 0..2 {
        assert_eq!(
            produce(&mut w, "idem", p, idempotent_batch(3, pid, 0, 0)),
            (0, 0)
        );
        assert_eq!(
            produce(&mut w, "idem", p, idempotent_batch(3, pid, 0, 0)),
            (0, 0),
            "retry"
        );
        assert_eq!(
            produce(&mut w, "idem", p, idempotent_batch(2, pid, 0, 3)),
            (0, 3)
        );
        let (code, _) = produce(&mut w, "idem", p, idempotent_batch(2, pid, 0, 9));
        assert_eq!(code, ResponseError::OutOfOrderSequenceNumber.code());
        let (code, _) = produce(&mut w, "idem", p, idempotent_batch(2, other, 0, 4));
        assert_eq!(
            code,
            ResponseError::UnknownProducerId.code(),
            "unknown producer mid-sequence"
        );
        assert_eq!(latest_offset(&mut w, "idem", p), 5);
    }
    drop(w);
    b.stop();

    let mut b = Broker::start_on(data.path(), SHARDS, port, &[]);
    let mut w = Wire::connect(port);
    assert!(
        init_producer_id(&mut w) > other,
        "ids are not reused after a restart"
    );
    for p in 0..2 {
        assert_eq!(
            produce(&mut w, "idem", p, idempotent_batch(2, pid, 0, 3)),
            (0, 3),
            "retry after restart"
        );
        assert_eq!(
            produce(&mut w, "idem", p, idempotent_batch(4, pid, 0, 5)),
            (0, 5)
        );
    }
    drop(w);
    b.kill();

    let _b = Broker::start_on(data.path(), SHARDS, port, &[]);
    let mut w = Wire::connect(port);
    for p in 0..2 {
        assert_eq!(
            produce(&mut w, "idem", p, idempotent_batch(4, pid, 0, 5)),
            (0, 5),
            "retry after kill -9"
        );
        assert_eq!(latest_offset(&mut w, "idem", p), 9);
        assert_eq!(
            produce(&mut w, "idem", p, idempotent_batch(1, pid, 0, 9)),
            (0, 9)
        );
    }
}

fn records_of(r: &FetchResponse) -> (i16, i64, usize) {
    let p = &r.responses[0].partitions[0];
    (
        p.error_code,
        p.high_watermark,
        p.records.as_ref().map_or(0, |r| r.len()),
    )
}

// A fetch at the end of the log waits for data, and new data wakes it:
// its answer holds what was produced after it was sent. Offsets past the
// end are out of range; a first batch over the size limit comes whole.
#[test]
fn fetch_long_poll_and_limits() {
    let (_data, mut b, port, mut w) = start_with_topic("poll", 2);
    for p in 0..2 {
        // Nothing there and no wait: an empty answer.
        let r: FetchResponse = w.call(ApiKey::Fetch, 12, &fetch_request("poll", p, 0, 0, 1 << 20));
        assert_eq!(records_of(&r), (0, 0, 0));
        // A long poll, answered by an append from another connection.
        let mut waiter = Wire::connect(port);
        let id = waiter.send(
            ApiKey::Fetch,
            12,
            &fetch_request("poll", p, 0, 20_000, 1 << 20),
        );
        std::thread::sleep(Duration::from_millis(200));
        let batch = sluice_storage::batch::build::uniform(5, 100, 1_700_000_000_000);
        assert_eq!(produce(&mut w, "poll", p, batch.clone()), (0, 0));
        let (got, r) = waiter.recv::<FetchResponse>(ApiKey::Fetch, 12);
        assert_eq!(got, id);
        let (code, hw, len) = records_of(&r);
        assert_eq!((code, hw), (0, 5));
        assert_eq!(len, batch.len(), "the long poll returned the new batch");
        // Out of range past the end.
        let r: FetchResponse = w.call(ApiKey::Fetch, 12, &fetch_request("poll", p, 6, 0, 1 << 20));
        assert_eq!(records_of(&r).0, ResponseError::OffsetOutOfRange.code());
        // A limit smaller than the first batch still returns it whole.
        let r: FetchResponse = w.call(ApiKey::Fetch, 12, &fetch_request("poll", p, 2, 0, 10));
        assert_eq!(records_of(&r), (0, 5, batch.len()));
    }
    // Out-of-range fetches are logged, at most a line a second per shard
    // however fast a client repeats them.
    let started = Instant::now();
    for _ in 0..200 {
        let r: FetchResponse = w.call(ApiKey::Fetch, 12, &fetch_request("poll", 0, 99, 0, 1 << 20));
        assert_eq!(records_of(&r).0, ResponseError::OffsetOutOfRange.code());
    }
    let lines = b
        .drain(Duration::from_millis(300))
        .lines()
        .filter(|l| l.contains("fetch outside the log"))
        .count();
    let bound = SHARDS * (started.elapsed().as_secs() as usize + 2);
    assert!(
        (1..=bound).contains(&lines),
        "{lines} out-of-range lines for 202 such fetches (at most {bound})"
    );
    // An unknown topic is an error in the answer, not a closed connection.
    let r: FetchResponse = w.call(ApiKey::Fetch, 12, &fetch_request("nope", 0, 0, 0, 1 << 20));
    assert_eq!(
        records_of(&r).0,
        ResponseError::UnknownTopicOrPartition.code()
    );
}

// acks=0 gets no answer at all (the next answer on the connection is the
// next request's), yet the data is written; many requests pipelined on
// one connection are all answered, in order.
#[test]
fn acks_zero_and_pipelining() {
    let (_data, _b, _, mut w) = start_with_topic("pipe", 4);
    let batch = sluice_storage::batch::build::uniform(2, 10, 1_700_000_000_000);
    w.send(ApiKey::Produce, 9, &produce_request("pipe", 1, 0, batch));
    let id = w.send(
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(None),
    );
    let (got, _) = w.recv::<MetadataResponse>(ApiKey::Metadata, 12);
    assert_eq!(got, id);
    assert_eq!(latest_offset(&mut w, "pipe", 1), 2);

    // 300 requests of mixed kinds written at once, more than the in-flight
    // limit, then read: every answer arrives, in request order.
    let mut ids = Vec::new();
    let mut kinds = Vec::new();
    let mut bytes = Vec::new();
    for i in 0..300i32 {
        let p = i % 4;
        let (api, frame) = match i % 3 {
            0 => (
                ApiKey::Metadata,
                Wire::frame(
                    ApiKey::Metadata,
                    12,
                    1000 + i,
                    &MetadataRequest::default().with_topics(None),
                ),
            ),
            1 => (
                ApiKey::Produce,
                Wire::frame(
                    ApiKey::Produce,
                    9,
                    1000 + i,
                    &produce_request(
                        "pipe",
                        p,
                        -1,
                        sluice_storage::batch::build::uniform(1, 10, 1_700_000_000_000),
                    ),
                ),
            ),
            _ => (
                ApiKey::Fetch,
                Wire::frame(
                    ApiKey::Fetch,
                    12,
                    1000 + i,
                    &fetch_request("pipe", p, 0, 0, 1 << 16),
                ),
            ),
        };
        ids.push(1000 + i);
        kinds.push(api);
        bytes.extend_from_slice(&frame);
    }
    w.s.write_all(&bytes).unwrap();
    for (id, api) in ids.into_iter().zip(kinds) {
        let version = match api {
            ApiKey::Metadata | ApiKey::Fetch => 12,
            _ => 9,
        };
        let (got, _) = w.recv_raw(api, version).unwrap();
        assert_eq!(got, id);
    }
    let total: i64 = (0..4).map(|p| latest_offset(&mut w, "pipe", p)).sum();
    assert_eq!(total, 2 + 100);
}

// Produce requests from a few hundred bytes to 3 MB, pipelined and
// written in uneven pieces with pauses between some (so the broker reads
// frames whole, in parts, across frame ends and after waiting on an empty
// socket), are each stored once, in order, and read back byte for byte.
#[test]
fn requests_of_every_size_arriving_in_pieces() {
    let (_data, _b, _, mut w) = start_with_topic("sizes", 1);
    // Each request's batches as (records, value bytes): frames of about
    // 0.2 KB to 3 MB (three batches under the 1 MB batch limit), large
    // after small and small after large.
    let requests: Vec<Vec<(usize, usize)>> = vec![
        vec![(2, 50)],
        vec![(150, 1000)],
        vec![(1000, 1000)],
        vec![(1, 200)],
        vec![(70, 1000)],
        vec![(1000, 1000), (1000, 1000), (1000, 1000)],
        vec![(64, 1000)],
        vec![(3, 10)],
        vec![(500, 1000)],
        vec![(2, 100)],
        vec![(130, 1000)],
    ];
    let mut batches: Vec<bytes::Bytes> = Vec::new();
    let mut bytes = Vec::new();
    for (i, shapes) in requests.iter().enumerate() {
        let mut records = Vec::new();
        for &(n, v) in shapes {
            let ts = 1_700_000_000_000 + batches.len() as i64;
            let b = sluice_storage::batch::build::uniform(n, v, ts);
            records.extend_from_slice(&b);
            batches.push(b);
        }
        bytes.extend_from_slice(&Wire::frame(
            ApiKey::Produce,
            9,
            500 + i as i32,
            &produce_request("sizes", 0, 1, records.into()),
        ));
    }
    let mut at = 0;
    let mut piece = 7_919;
    while at < bytes.len() {
        let end = (at + piece).min(bytes.len());
        w.s.write_all(&bytes[at..end]).unwrap();
        w.s.flush().unwrap();
        at = end;
        piece = piece * 7 % 300_007 + 1;
        if piece % 3 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let mut next = 0i64;
    for (i, shapes) in requests.iter().enumerate() {
        let (got, r) = w.recv::<ProduceResponse>(ApiKey::Produce, 9);
        assert_eq!(got, 500 + i as i32);
        let p = &r.responses[0].partition_responses[0];
        assert_eq!((p.error_code, p.base_offset), (0, next), "request {i}");
        next += shapes.iter().map(|&(n, _)| n as i64).sum::<i64>();
    }
    assert_eq!(latest_offset(&mut w, "sizes", 0), next);
    // Read back: every batch as sent from its CRC on (the broker sets only
    // the base offset and leader epoch before it).
    let mut offset = 0i64;
    let mut stored = Vec::new();
    while offset < next {
        let r: FetchResponse = w.call(
            ApiKey::Fetch,
            12,
            &fetch_request("sizes", 0, offset, 0, 8 << 20),
        );
        let p = &r.responses[0].partitions[0];
        assert_eq!(p.error_code, 0);
        let mut rest = p.records.clone().unwrap_or_default();
        assert!(!rest.is_empty(), "fetch at {offset} returned nothing");
        while rest.len() >= 12 {
            let len = 12 + i32::from_be_bytes(rest[8..12].try_into().unwrap()) as usize;
            if rest.len() < len {
                break;
            }
            let b = rest.split_to(len);
            let base = i64::from_be_bytes(b[..8].try_into().unwrap());
            let last_delta = i32::from_be_bytes(b[23..27].try_into().unwrap());
            offset = base + last_delta as i64 + 1;
            stored.push(b);
        }
    }
    assert_eq!(stored.len(), batches.len());
    for (i, (got, sent)) in stored.iter().zip(&batches).enumerate() {
        assert_eq!(got.len(), sent.len(), "batch {i}");
        assert!(got[17..] == sent[17..], "batch {i} differs");
    }
}

fn describe(w: &mut Wire, topic: &str) -> Vec<(String, String, i8)> {
    let r: DescribeConfigsResponse = w.call(
        ApiKey::DescribeConfigs,
        4,
        &DescribeConfigsRequest::default().with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_string(topic.into())),
        ]),
    );
    assert_eq!(r.results[0].error_code, 0);
    r.results[0]
        .configs
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                c.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                c.config_source,
            )
        })
        .collect()
}

// IncrementalAlterConfigs sets and deletes single configs, refuses bad
// values without changing anything, and DescribeConfigs shows each
// config's value and whether it was set on the topic or is the default.
#[test]
fn incremental_alter_configs() {
    let (_data, _b, _, mut w) = start_with_topic("cfg", 1);
    let alter = |w: &mut Wire, ops: Vec<(&str, i8, Option<&str>)>| -> i16 {
        let r: IncrementalAlterConfigsResponse = w.call(
            ApiKey::IncrementalAlterConfigs,
            1,
            &IncrementalAlterConfigsRequest::default().with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("cfg"))
                    .with_configs(
                        ops.into_iter()
                            .map(|(k, op, v)| {
                                incremental_alter_configs_request::AlterableConfig::default()
                                    .with_name(StrBytes::from_string(k.into()))
                                    .with_config_operation(op)
                                    .with_value(v.map(|v| StrBytes::from_string(v.into())))
                            })
                            .collect(),
                    ),
            ]),
        );
        r.responses[0].error_code
    };
    assert_eq!(
        alter(
            &mut w,
            vec![
                ("retention.ms", 0, Some("60000")),
                ("segment.ms", 0, Some("600000"))
            ]
        ),
        0
    );
    let c = describe(&mut w, "cfg");
    assert!(
        c.contains(&("retention.ms".into(), "60000".into(), 1)),
        "{c:?}"
    );
    assert!(
        c.contains(&("segment.ms".into(), "600000".into(), 1)),
        "{c:?}"
    );
    assert_eq!(alter(&mut w, vec![("segment.ms", 1, None)]), 0);
    let c = describe(&mut w, "cfg");
    assert!(
        c.iter().any(|(k, _, s)| k == "segment.ms" && *s == 5),
        "{c:?}"
    );
    let invalid = ResponseError::InvalidConfig.code();
    assert_eq!(
        alter(
            &mut w,
            vec![
                ("retention.ms", 0, Some("1")),
                ("max.message.bytes", 0, Some("huge"))
            ]
        ),
        invalid
    );
    // Below the broker's floors (--segment-ms-min, --segment-bytes-min):
    // a segment rolled every few appends.
    assert_eq!(
        alter(&mut w, vec![("segment.ms", 0, Some("59999"))]),
        invalid
    );
    assert_eq!(
        alter(&mut w, vec![("segment.bytes", 0, Some("4096"))]),
        invalid
    );
    assert_eq!(
        alter(&mut w, vec![("no.such.config", 0, Some("1"))]),
        invalid
    );
    let c = describe(&mut w, "cfg");
    assert!(
        c.contains(&("retention.ms".into(), "60000".into(), 1)),
        "a refused change changed nothing: {c:?}"
    );
}

/// A normal client's round trip: metadata, produce, fetch.
fn still_serves(port: u16, n: &mut i64) {
    let mut w = Wire::connect(port);
    let md: MetadataResponse = w.call(
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(None),
    );
    assert!(md
        .topics
        .iter()
        .any(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some("bad")));
    let batch = sluice_storage::batch::build::uniform(1, 10, 1_700_000_000_000);
    assert_eq!(produce(&mut w, "bad", 0, batch), (0, *n));
    *n += 1;
    let r: FetchResponse = w.call(ApiKey::Fetch, 12, &fetch_request("bad", 0, 0, 0, 1 << 20));
    assert_eq!(records_of(&r).1, *n);
}

// Every kind of bad input is answered with an error where the protocol
// has a place for one, or closes that connection alone; nothing is
// written for a bad batch, and afterwards a normal client is served.
#[test]
fn bad_input_is_refused_and_the_broker_keeps_serving() {
    let (_data, mut b, port, mut w) = start_with_topic("bad", 1);
    let mut n = 0;
    still_serves(port, &mut n);

    let mut closes = 0;
    let header = |api: i16, version: i16| {
        let mut f = Vec::new();
        f.extend_from_slice(&api.to_be_bytes());
        f.extend_from_slice(&version.to_be_bytes());
        f.extend_from_slice(&7i32.to_be_bytes());
        f.extend_from_slice(&(-1i16).to_be_bytes());
        f
    };
    let framed = |body: Vec<u8>| {
        let mut f = (body.len() as i32).to_be_bytes().to_vec();
        f.extend_from_slice(&body);
        f
    };
    let mut truncated_produce = Wire::frame(
        ApiKey::Produce,
        9,
        7,
        &produce_request(
            "bad",
            0,
            -1,
            sluice_storage::batch::build::uniform(3, 10, 1_700_000_000_000),
        ),
    );
    truncated_produce.truncate(truncated_produce.len() - 40);
    let len = (truncated_produce.len() - 4) as i32;
    truncated_produce[..4].copy_from_slice(&len.to_be_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("negative length", (-5i32).to_be_bytes().to_vec()),
        (
            "length over the limit",
            (200i32 << 20).to_be_bytes().to_vec(),
        ),
        ("length shorter than a header", framed(vec![0, 3, 0])),
        ("unknown api key", framed(header(999, 0))),
        ("unknown version of a served api", framed(header(3, 99))),
        ("truncated produce body", truncated_produce),
        (
            "garbage body",
            framed([header(3, 12), vec![0xff; 30]].concat()),
        ),
    ];
    for (what, bytes) in cases {
        let mut c = Wire::connect(port);
        c.s.write_all(&bytes).unwrap();
        assert!(c.closed(), "{what}: connection closed");
        closes += 1;
        still_serves(port, &mut n);
    }

    // A batch with a bad CRC: CORRUPT_MESSAGE, nothing written.
    let mut batch = sluice_storage::batch::build::uniform(3, 10, 1_700_000_000_000).to_vec();
    let last = batch.len() - 1;
    batch[last] ^= 0xff;
    let (code, _) = produce(&mut w, "bad", 0, bytes::Bytes::from(batch));
    assert_eq!(code, ResponseError::CorruptMessage.code());
    // Bytes that are not a batch at all.
    let (code, _) = produce(&mut w, "bad", 0, bytes::Bytes::from_static(&[1, 2, 3]));
    assert_eq!(code, ResponseError::CorruptMessage.code());
    // A partition that does not exist.
    let (code, _) = produce(
        &mut w,
        "bad",
        5,
        sluice_storage::batch::build::uniform(1, 1, 0),
    );
    assert_eq!(code, ResponseError::UnknownTopicOrPartition.code());
    assert_eq!(
        latest_offset(&mut w, "bad", 0),
        n,
        "nothing written by refused batches"
    );
    // An API this broker does not serve gets an error answer.
    let r: EndTxnResponse = w.call(ApiKey::EndTxn, 1, &EndTxnRequest::default());
    assert_eq!(r.error_code, ResponseError::UnsupportedVersion.code());
    still_serves(port, &mut n);

    // One log line per closed connection, and no panic.
    b.stop();
    let log = b.drain(Duration::from_millis(100));
    assert_eq!(log.matches("connection closed").count(), closes, "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

// APIs this broker does not serve (yet), at every version their codecs
// know: each request gets an error answer or closes its own connection,
// never crashes a shard; the broker serves normally afterwards.
#[test]
fn unserved_apis_get_an_answer_or_a_close() {
    macro_rules! defaults {
        ($($k:ident => $req:ident),* $(,)?) => {
            vec![$((ApiKey::$k, RequestKind::$k($req::default()))),*]
        };
    }
    let requests = defaults! {
        DeleteRecords => DeleteRecordsRequest,
        DescribeLogDirs => DescribeLogDirsRequest,
        OffsetForLeaderEpoch => OffsetForLeaderEpochRequest,
        EndTxn => EndTxnRequest,
        AddPartitionsToTxn => AddPartitionsToTxnRequest,
        DescribeClientQuotas => DescribeClientQuotasRequest,
        ElectLeaders => ElectLeadersRequest,
        DescribeProducers => DescribeProducersRequest,
        ConsumerGroupHeartbeat => ConsumerGroupHeartbeatRequest,
        GetTelemetrySubscriptions => GetTelemetrySubscriptionsRequest,
    };
    let (_data, mut b, port, _w) = start_with_topic("bad", 1);
    let (mut answered, mut closed) = (0, 0);
    for (api, body) in requests {
        let range = api.valid_versions();
        for version in range.min..=range.max {
            let mut enc = bytes::BytesMut::new();
            if body.encode(&mut enc, version).is_err() {
                continue;
            }
            let mut frame = bytes::BytesMut::new();
            RequestHeader::default()
                .with_request_api_key(api as i16)
                .with_request_api_version(version)
                .with_correlation_id(42)
                .encode(&mut frame, api.request_header_version(version))
                .unwrap();
            frame.extend_from_slice(&enc);
            let mut c = Wire::connect(port);
            c.s.write_all(&(frame.len() as i32).to_be_bytes()).unwrap();
            c.s.write_all(&frame).unwrap();
            match c.recv_raw(api, version) {
                Ok((id, _)) => {
                    assert_eq!(id, 42, "{api:?} v{version}");
                    answered += 1;
                }
                Err(_) => closed += 1,
            }
        }
    }
    assert!(
        answered > 0 && closed > 0,
        "answered {answered}, closed {closed}"
    );
    let mut n = 0;
    still_serves(port, &mut n);
    b.stop();
    let log = b.drain(Duration::from_millis(100));
    assert!(!log.contains("panicked"), "{log}");
}

// Every served API at every served version, as clients old and new send
// them: each gets an answer that decodes at that version, and the broker
// stays up. (A field set that a version lacks makes the codec refuse to
// encode; this is where that shows.)
#[test]
fn every_served_api_at_every_version() {
    let (_data, mut b, port, mut w) = start_with_topic("vers", 2);
    assert_eq!(
        produce(
            &mut w,
            "vers",
            0,
            sluice_storage::batch::build::uniform(3, 10, 1_700_000_000_000)
        ),
        (0, 0)
    );
    let versions: ApiVersionsResponse =
        w.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    let mut checked = 0;
    for k in &versions.api_keys {
        let api = ApiKey::try_from(k.api_key).unwrap();
        for version in k.min_version..=k.max_version {
            let topic = format!("vers-{}-{version}", k.api_key);
            let body: RequestKind = match api {
                ApiKey::ApiVersions => RequestKind::ApiVersions(ApiVersionsRequest::default()),
                ApiKey::Metadata => {
                    RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![
                    metadata_request::MetadataRequestTopic::default().with_name(Some(name("vers"))),
                ])))
                }
                ApiKey::Produce => RequestKind::Produce(produce_request(
                    "vers",
                    0,
                    -1,
                    sluice_storage::batch::build::uniform(1, 10, 1_700_000_000_000),
                )),
                ApiKey::Fetch => RequestKind::Fetch(fetch_request("vers", 0, 0, 0, 1 << 20)),
                ApiKey::ListOffsets => {
                    RequestKind::ListOffsets(list_offsets_request("vers", 0, -1))
                }
                ApiKey::CreateTopics => {
                    RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![
                    create_topics_request::CreatableTopic::default()
                        .with_name(name(&topic))
                        .with_num_partitions(1)
                        .with_replication_factor(1),
                ]))
                }
                ApiKey::DeleteTopics => {
                    if version >= 6 {
                        RequestKind::DeleteTopics(DeleteTopicsRequest::default().with_topics(vec![
                                delete_topics_request::DeleteTopicState::default()
                                    .with_name(Some(name("no-such"))),
                            ]))
                    } else {
                        RequestKind::DeleteTopics(
                            DeleteTopicsRequest::default().with_topic_names(vec![name("no-such")]),
                        )
                    }
                }
                ApiKey::InitProducerId => RequestKind::InitProducerId(
                    InitProducerIdRequest::default()
                        .with_transactional_id(None)
                        .with_transaction_timeout_ms(1000),
                ),
                ApiKey::DescribeConfigs => RequestKind::DescribeConfigs(
                    DescribeConfigsRequest::default().with_resources(vec![
                        describe_configs_request::DescribeConfigsResource::default()
                            .with_resource_type(2)
                            .with_resource_name(StrBytes::from_static_str("vers"))
                            .with_configuration_keys(None),
                    ]),
                ),
                ApiKey::AlterConfigs => {
                    RequestKind::AlterConfigs(AlterConfigsRequest::default().with_resources(vec![
                    alter_configs_request::AlterConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(StrBytes::from_static_str("no-such")),
                ]))
                }
                ApiKey::IncrementalAlterConfigs => RequestKind::IncrementalAlterConfigs(
                    IncrementalAlterConfigsRequest::default().with_resources(vec![
                        incremental_alter_configs_request::AlterConfigsResource::default()
                            .with_resource_type(2)
                            .with_resource_name(StrBytes::from_static_str("no-such")),
                    ]),
                ),
                ApiKey::CreatePartitions => RequestKind::CreatePartitions(
                    CreatePartitionsRequest::default().with_topics(vec![
                        create_partitions_request::CreatePartitionsTopic::default()
                            .with_name(name("no-such"))
                            .with_count(3),
                    ]),
                ),
                ApiKey::FindCoordinator => RequestKind::FindCoordinator(
                    FindCoordinatorRequest::default()
                        .with_key(if version < 4 {
                            StrBytes::from_static_str("g")
                        } else {
                            StrBytes::default()
                        })
                        .with_coordinator_keys(if version >= 4 {
                            vec![StrBytes::from_static_str("g")]
                        } else {
                            vec![]
                        }),
                ),
                ApiKey::JoinGroup => RequestKind::JoinGroup(
                    JoinGroupRequest::default()
                        .with_group_id(GroupId(StrBytes::from_string(format!("g{version}"))))
                        .with_session_timeout_ms(10_000)
                        .with_rebalance_timeout_ms(if version >= 1 { 10_000 } else { -1 })
                        .with_protocol_type(StrBytes::from_static_str("consumer"))
                        .with_group_instance_id(None)
                        .with_protocols(vec![
                            join_group_request::JoinGroupRequestProtocol::default()
                                .with_name(StrBytes::from_static_str("range"))
                                .with_metadata(bytes::Bytes::from_static(b"m")),
                        ]),
                ),
                ApiKey::SyncGroup => RequestKind::SyncGroup(
                    SyncGroupRequest::default()
                        .with_group_id(GroupId(StrBytes::from_static_str("g")))
                        .with_group_instance_id(None),
                ),
                ApiKey::Heartbeat => RequestKind::Heartbeat(
                    HeartbeatRequest::default()
                        .with_group_id(GroupId(StrBytes::from_static_str("g")))
                        .with_group_instance_id(None),
                ),
                ApiKey::LeaveGroup => RequestKind::LeaveGroup(if version >= 3 {
                    LeaveGroupRequest::default()
                        .with_group_id(GroupId(StrBytes::from_static_str("g")))
                        .with_members(vec![leave_group_request::MemberIdentity::default()
                            .with_member_id(StrBytes::from_static_str("m"))
                            .with_group_instance_id(None)])
                } else {
                    LeaveGroupRequest::default()
                        .with_group_id(GroupId(StrBytes::from_static_str("g")))
                        .with_member_id(StrBytes::from_static_str("m"))
                }),
                ApiKey::OffsetCommit => {
                    RequestKind::OffsetCommit(
                        OffsetCommitRequest::default()
                            .with_group_id(GroupId(StrBytes::from_string(format!("oc{version}"))))
                            .with_generation_id_or_member_epoch(-1)
                            .with_group_instance_id(None)
                            .with_topics(vec![
                                offset_commit_request::OffsetCommitRequestTopic::default()
                                    .with_name(name("vers"))
                                    .with_partitions(vec![
                                offset_commit_request::OffsetCommitRequestPartition::default()
                                    .with_partition_index(0)
                                    .with_committed_offset(2)
                                    .with_committed_leader_epoch(if version >= 6 { 0 } else { -1 }),
                            ]),
                            ]),
                    )
                }
                ApiKey::OffsetFetch => RequestKind::OffsetFetch(if version >= 8 {
                    OffsetFetchRequest::default().with_groups(vec![
                        offset_fetch_request::OffsetFetchRequestGroup::default()
                            .with_group_id(GroupId(StrBytes::from_static_str("oc2")))
                            .with_topics(None),
                    ])
                } else {
                    OffsetFetchRequest::default()
                        .with_group_id(GroupId(StrBytes::from_static_str("oc2")))
                        .with_topics(Some(vec![
                            offset_fetch_request::OffsetFetchRequestTopic::default()
                                .with_name(name("vers"))
                                .with_partition_indexes(vec![0, 1]),
                        ]))
                }),
                ApiKey::ListGroups => RequestKind::ListGroups(ListGroupsRequest::default()),
                ApiKey::DescribeGroups => RequestKind::DescribeGroups(
                    DescribeGroupsRequest::default()
                        .with_groups(vec![GroupId(StrBytes::from_static_str("g0"))]),
                ),
                ApiKey::DeleteGroups => RequestKind::DeleteGroups(
                    DeleteGroupsRequest::default()
                        .with_groups_names(vec![GroupId(StrBytes::from_static_str("nope"))]),
                ),
                ApiKey::OffsetDelete => RequestKind::OffsetDelete(
                    OffsetDeleteRequest::default()
                        .with_group_id(GroupId(StrBytes::from_static_str("oc2")))
                        .with_topics(vec![
                            offset_delete_request::OffsetDeleteRequestTopic::default()
                                .with_name(name("vers"))
                                .with_partitions(vec![
                                    offset_delete_request::OffsetDeleteRequestPartition::default()
                                        .with_partition_index(0),
                                ]),
                        ]),
                ),
                ApiKey::DescribeCluster => RequestKind::DescribeCluster(
                    DescribeClusterRequest::default().with_endpoint_type(1),
                ),
                ApiKey::DescribeQuorum => {
                    RequestKind::DescribeQuorum(DescribeQuorumRequest::default().with_topics(vec![
                        describe_quorum_request::TopicData::default()
                            .with_topic_name(name("__cluster_metadata"))
                            .with_partitions(vec![
                                describe_quorum_request::PartitionData::default(),
                            ]),
                    ]))
                }
                ApiKey::OffsetForLeaderEpoch => {
                    RequestKind::OffsetForLeaderEpoch(offset_for_leader_epoch("vers", 0, -1, 0))
                }
                ApiKey::AlterPartitionReassignments => RequestKind::AlterPartitionReassignments(
                    AlterPartitionReassignmentsRequest::default().with_topics(vec![
                        alter_partition_reassignments_request::ReassignableTopic::default()
                            .with_name(name("vers"))
                            .with_partitions(vec![
                                alter_partition_reassignments_request::ReassignablePartition::default()
                                    .with_partition_index(0)
                                    .with_replicas(Some(vec![BrokerId(1)])),
                            ]),
                    ]),
                ),
                ApiKey::ListPartitionReassignments => RequestKind::ListPartitionReassignments(
                    ListPartitionReassignmentsRequest::default(),
                ),
                // On this PLAINTEXT listener: answered ILLEGAL_SASL_STATE
                // (then the connection closes).
                ApiKey::SaslHandshake => RequestKind::SaslHandshake(
                    SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
                ),
                ApiKey::SaslAuthenticate => {
                    RequestKind::SaslAuthenticate(SaslAuthenticateRequest::default())
                }
                ApiKey::DescribeUserScramCredentials => RequestKind::DescribeUserScramCredentials(
                    DescribeUserScramCredentialsRequest::default(),
                ),
                ApiKey::AlterUserScramCredentials => RequestKind::AlterUserScramCredentials(
                    AlterUserScramCredentialsRequest::default().with_deletions(vec![
                        alter_user_scram_credentials_request::ScramCredentialDeletion::default()
                            .with_name(StrBytes::from_static_str("nobody"))
                            .with_mechanism(1),
                    ]),
                ),
                ApiKey::CreateAcls => RequestKind::CreateAcls(CreateAclsRequest::default().with_creations(
                    vec![create_acls_request::AclCreation::default()
                        .with_resource_type(2)
                        .with_resource_name(StrBytes::from_static_str("vers"))
                        .with_resource_pattern_type(3)
                        .with_principal(StrBytes::from_static_str("User:v"))
                        .with_host(StrBytes::from_static_str("*"))
                        .with_operation(3)
                        .with_permission_type(3)],
                )),
                ApiKey::DescribeAcls => RequestKind::DescribeAcls(
                    DescribeAclsRequest::default()
                        .with_resource_type_filter(1)
                        .with_pattern_type_filter(1)
                        .with_operation(1)
                        .with_permission_type(1),
                ),
                ApiKey::DeleteAcls => RequestKind::DeleteAcls(DeleteAclsRequest::default().with_filters(vec![
                    delete_acls_request::DeleteAclsFilter::default()
                        .with_resource_type_filter(2)
                        .with_resource_name_filter(Some(StrBytes::from_static_str("vers")))
                        .with_pattern_type_filter(3)
                        .with_operation(1)
                        .with_permission_type(1),
                ])),
                other => panic!("no request template for {other:?}: add one"),
            };
            let mut enc = bytes::BytesMut::new();
            body.encode(&mut enc, version)
                .unwrap_or_else(|e| panic!("{api:?} v{version} request: {e}"));
            let mut frame = bytes::BytesMut::new();
            RequestHeader::default()
                .with_request_api_key(api as i16)
                .with_request_api_version(version)
                .with_correlation_id(77)
                .with_client_id(Some(StrBytes::from_static_str("versions")))
                .encode(&mut frame, api.request_header_version(version))
                .unwrap();
            frame.extend_from_slice(&enc);
            let mut c = Wire::connect(port);
            c.s.write_all(&(frame.len() as i32).to_be_bytes()).unwrap();
            c.s.write_all(&frame).unwrap();
            let (id, mut bytes) = c
                .recv_raw(api, version)
                .unwrap_or_else(|e| panic!("{api:?} v{version}: no answer ({e})"));
            assert_eq!(id, 77);
            ResponseKind::decode(api, &mut bytes, version)
                .unwrap_or_else(|e| panic!("{api:?} v{version} answer does not decode: {e}"));
            checked += 1;
        }
    }
    assert!(checked > 60, "{checked}");
    b.stop();
    let log = b.drain(Duration::from_millis(100));
    assert!(!log.contains("panicked"), "{log}");
}

fn offset_for_leader_epoch(
    topic: &str,
    partition: i32,
    current: i32,
    epoch: i32,
) -> OffsetForLeaderEpochRequest {
    OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![
                    offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                        .with_partition(partition)
                        .with_current_leader_epoch(current)
                        .with_leader_epoch(epoch),
                ]),
        ])
}

// Leader epochs on a single broker (epoch 0, KIP-320): OffsetForLeaderEpoch
// says where epoch 0 ends (the log end) and knows no later epoch; a
// CurrentLeaderEpoch the broker has not reached is UNKNOWN_LEADER_EPOCH on
// Fetch, ListOffsets and OffsetForLeaderEpoch, never data; an unknown
// topic is named so. ListOffsets v4+ gives each offset's epoch.
#[test]
fn leader_epochs_are_checked_and_answered() {
    let (_data, _b, _, mut w) = start_with_topic("epochs", 1);
    for _ in 0..3 {
        let (code, _) = produce(
            &mut w,
            "epochs",
            0,
            sluice_storage::batch::build::uniform(2, 10, 1_700_000_000_000),
        );
        assert_eq!(code, 0);
    }
    let ask = |w: &mut Wire, topic: &str, current: i32, epoch: i32| {
        let r: OffsetForLeaderEpochResponse = w.call(
            ApiKey::OffsetForLeaderEpoch,
            2,
            &offset_for_leader_epoch(topic, 0, current, epoch),
        );
        let p = &r.topics[0].partitions[0];
        (p.error_code, p.leader_epoch, p.end_offset)
    };
    assert_eq!(ask(&mut w, "epochs", 0, 0), (0, 0, 6));
    assert_eq!(ask(&mut w, "epochs", -1, 0), (0, 0, 6));
    assert_eq!(ask(&mut w, "epochs", -1, 3), (0, -1, -1));
    let unknown = ResponseError::UnknownLeaderEpoch.code();
    assert_eq!(ask(&mut w, "epochs", 2, 0).0, unknown);
    assert_eq!(
        ask(&mut w, "nosuch", -1, 0).0,
        ResponseError::UnknownTopicOrPartition.code()
    );

    let mut lo = list_offsets_request("epochs", 0, -1);
    lo.topics[0].partitions[0].current_leader_epoch = 1;
    let r: ListOffsetsResponse = w.call(ApiKey::ListOffsets, 6, &lo);
    assert_eq!(r.topics[0].partitions[0].error_code, unknown);
    let mut lo = list_offsets_request("epochs", 0, -2);
    lo.topics[0].partitions[0].current_leader_epoch = 0;
    let r: ListOffsetsResponse = w.call(ApiKey::ListOffsets, 6, &lo);
    let p = &r.topics[0].partitions[0];
    assert_eq!((p.error_code, p.offset, p.leader_epoch), (0, 0, 0));

    let mut f = fetch_request("epochs", 0, 0, 0, 1 << 20);
    f.topics[0].partitions[0].current_leader_epoch = 4;
    let r: FetchResponse = w.call(ApiKey::Fetch, 12, &f);
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, unknown);
    assert!(p.records.as_ref().is_none_or(|b| b.is_empty()));
    f.topics[0].partitions[0].current_leader_epoch = 0;
    let r: FetchResponse = w.call(ApiKey::Fetch, 12, &f);
    assert_eq!(r.responses[0].partitions[0].error_code, 0);
    assert!(!fetched_bytes(&r).is_empty());
}

/// The records bytes of a one-partition fetch answer.
fn fetched_bytes(r: &FetchResponse) -> bytes::Bytes {
    r.responses[0].partitions[0]
        .records
        .clone()
        .unwrap_or_default()
}

// A batch is stored and served byte for byte as the producer sent it (a
// compressed one is never recompressed), except the base offset and leader
// epoch the broker writes into its header.
#[test]
fn batches_are_served_as_they_were_sent() {
    let (_data, _b, _, mut w) = start_with_topic("exact", 1);
    // A gzip batch, as a client makes it: the broker checks its records
    // (decompressing them) but stores the compressed bytes as they came.
    let mut gz = sluice_net::records::BatchBuilder::new(4096);
    for i in 0..4u8 {
        gz.push(None, &[i; 50], 1_700_000_000_000);
    }
    let gz = gz.finish(sluice_net::records::Compression::Gzip).unwrap();
    let sealed = [
        sluice_storage::batch::build::uniform(3, 100, 1_700_000_000_000),
        gz,
    ];
    assert_eq!(produce(&mut w, "exact", 0, sealed[0].clone()), (0, 0));
    assert_eq!(produce(&mut w, "exact", 0, sealed[1].clone()), (0, 3));
    let r: FetchResponse = w.call(ApiKey::Fetch, 12, &fetch_request("exact", 0, 0, 0, 1 << 20));
    let got = fetched_bytes(&r);
    assert_eq!(got.len(), sealed[0].len() + sealed[1].len());
    let (first, second) = got.split_at(sealed[0].len());
    for (got, sent, base) in [(first, &sealed[0], 0i64), (second, &sealed[1], 3)] {
        assert_eq!(&got[..8], &base.to_be_bytes(), "base offset stamped");
        assert_eq!(&got[12..16], &0i32.to_be_bytes(), "leader epoch stamped");
        assert_eq!(&got[8..12], &sent[8..12]);
        assert_eq!(&got[16..], &sent[16..], "everything else as sent");
    }
}

// Retention runs on its own: with retention.ms and segment.ms small, old
// segments are deleted by the shard's housekeeping and the log start
// moves up, while the newest data stays readable.
#[test]
fn retention_deletes_old_segments() {
    let data = tempdir();
    let port = free_port();
    let _b = Broker::start_on(data.path(), SHARDS, port, &["--segment-ms-min", "1"]);
    let mut w = Wire::connect(port);
    let r: CreateTopicsResponse = w.call(
        ApiKey::CreateTopics,
        7,
        &CreateTopicsRequest::default().with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(name("aged"))
                .with_num_partitions(1)
                .with_replication_factor(1)
                .with_configs(
                    [("retention.ms", "1000"), ("segment.ms", "100")]
                        .into_iter()
                        .map(|(k, v)| {
                            create_topics_request::CreatableTopicConfig::default()
                                .with_name(StrBytes::from_static_str(k))
                                .with_value(Some(StrBytes::from_static_str(v)))
                        })
                        .collect(),
                ),
        ]),
    );
    assert_eq!(r.topics[0].error_code, 0, "{r:?}");
    // Records stamped now, in three segments (each append after segment.ms
    // rolls a new one).
    for i in 0..3 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert_eq!(
            produce(
                &mut w,
                "aged",
                0,
                sluice_storage::batch::build::uniform(2, 10, now)
            ),
            (0, 2 * i)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let earliest = |w: &mut Wire| list_offset(w, "aged", 0, -2);
    assert_eq!(earliest(&mut w), 0);
    // Housekeeping runs every 10 s; give it three rounds.
    let deadline = Instant::now() + Duration::from_secs(35);
    while earliest(&mut w) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    let start = earliest(&mut w);
    assert!(start > 0, "retention never ran");
    assert_eq!(latest_offset(&mut w, "aged", 0), 6);
    let r: FetchResponse = w.call(ApiKey::Fetch, 12, &fetch_request("aged", 0, 0, 0, 1 << 20));
    assert_eq!(records_of(&r).0, ResponseError::OffsetOutOfRange.code());
    let r: FetchResponse = w.call(
        ApiKey::Fetch,
        12,
        &fetch_request("aged", 0, start, 0, 1 << 20),
    );
    assert_eq!(records_of(&r).0, 0);
}

// A partition whose directory vanished while the broker was down is
// reported at start-up and served empty, instead of failing the broker.
#[test]
fn a_missing_partition_directory_is_reported() {
    let (data, mut b, port, mut w) = start_with_topic("lost", 2);
    let batch = sluice_storage::batch::build::uniform(2, 10, 1_700_000_000_000);
    for p in 0..2 {
        assert_eq!(produce(&mut w, "lost", p, batch.clone()), (0, 0));
    }
    drop(w);
    b.stop();
    std::fs::remove_dir_all(data.path().join("lost-1")).unwrap();
    let mut b = Broker::start_on(data.path(), SHARDS, port, &[]);
    assert!(b.wait_for("partition directory missing"), "{:#?}", b.seen);
    let mut w = Wire::connect(port);
    assert_eq!(latest_offset(&mut w, "lost", 0), 2);
    assert_eq!(latest_offset(&mut w, "lost", 1), 0);
}
