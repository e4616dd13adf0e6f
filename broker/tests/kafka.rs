//! The broker as librdkafka (through the rdkafka crate) sees it: produce
//! with acks=all and idempotence in every codec, consume back, restarts
//! and kill -9, offsets, and the admin API. The broker runs as the real
//! `sluice` binary on two shards, so requests cross shards.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{tempdir, Broker};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, Timestamp, TopicPartitionList};

const SHARDS: usize = 2;
const TIMESTAMP_BASE_MS: i64 = 1_700_000_000_000;

/// An acknowledged message: (partition, offset, index of the message).
type Delivered = (i32, i64, usize);

/// Delivery reports, and delivery errors.
#[derive(Default, Clone)]
struct Deliveries(Arc<Mutex<(Vec<Delivered>, Vec<String>)>>);

impl ClientContext for Deliveries {}
impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<usize>;
    fn delivery(&self, r: &DeliveryResult<'_>, index: Box<usize>) {
        let mut d = self.0.lock().unwrap();
        match r {
            Ok(m) => d.0.push((m.partition(), m.offset(), *index)),
            Err((e, _)) => d.1.push(e.to_string()),
        }
    }
}

fn admin(b: &Broker) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .create()
        .unwrap()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    futures_lite::future::block_on(f)
}

fn create_topic(b: &Broker, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let r = block_on(admin(b).create_topics(&[t], &AdminOptions::new())).unwrap();
    assert!(r[0].is_ok(), "{r:?}");
}

fn key(i: usize) -> String {
    format!("key-{}", i % 1000)
}

fn value(i: usize, codec: &str) -> Vec<u8> {
    // Compressible, and different for every message.
    format!("{codec}:{i}:{}", "v".repeat(40 + i % 50)).into_bytes()
}

/// Produces `n` keyed messages with headers and explicit timestamps;
/// returns the delivery reports once every message is acknowledged.
fn produce(b: &Broker, topic: &str, n: usize, codec: &str, acks: &str) -> Vec<(i32, i64, usize)> {
    let ctx = Deliveries::default();
    let p: ThreadedProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set(
            "enable.idempotence",
            if acks == "all" { "true" } else { "false" },
        )
        .set("acks", acks)
        .set("compression.codec", codec)
        .set("linger.ms", "5")
        .set("batch.size", "65536")
        .create_with_context(ctx.clone())
        .unwrap();
    for i in 0..n {
        let k = key(i);
        let v = value(i, codec);
        let idx = i.to_string();
        let mut rec = BaseRecord::with_opaque_to(topic, Box::new(i))
            .key(&k)
            .payload(&v)
            .timestamp(TIMESTAMP_BASE_MS + i as i64)
            .headers(
                OwnedHeaders::new()
                    .insert(Header {
                        key: "index",
                        value: Some(&idx),
                    })
                    .insert(Header {
                        key: "codec",
                        value: Some(codec),
                    }),
            );
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((e, r)) => {
                    assert!(
                        matches!(
                            e,
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull
                            )
                        ),
                        "{e}"
                    );
                    rec = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    p.flush(Duration::from_secs(120)).unwrap();
    let d = ctx.0.lock().unwrap();
    assert!(
        d.1.is_empty(),
        "delivery errors: {:?}",
        &d.1[..d.1.len().min(5)]
    );
    assert_eq!(d.0.len(), n);
    d.0.clone()
}

/// A consumed message.
#[derive(Debug, Clone, PartialEq)]
struct Got {
    offset: i64,
    key: String,
    value: Vec<u8>,
    headers: Vec<(String, String)>,
    timestamp: i64,
}

/// Consumes every partition from the beginning until `n` messages came.
fn consume(b: &Broker, topic: &str, partitions: i32, n: usize) -> BTreeMap<i32, Vec<Got>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        // librdkafka wants a group id even for assigned partitions; no
        // group API is used (offsets are explicit, nothing is committed).
        .set("group.id", "sluice-test")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out: BTreeMap<i32, Vec<Got>> = BTreeMap::new();
    let mut count = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while count < n {
        assert!(Instant::now() < deadline, "consumed {count} of {n}");
        let Some(m) = c.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = m.unwrap();
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8(h.value.unwrap_or_default().to_vec()).unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let timestamp = match m.timestamp() {
            Timestamp::CreateTime(t) => t,
            other => panic!("timestamp {other:?}"),
        };
        out.entry(m.partition()).or_default().push(Got {
            offset: m.offset(),
            key: String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
            value: m.payload().unwrap().to_vec(),
            headers,
            timestamp,
        });
        count += 1;
    }
    // Nothing more arrives.
    if let Some(Ok(m)) = c.poll(Duration::from_millis(300)) {
        panic!(
            "unexpected extra message at {}:{}",
            m.partition(),
            m.offset()
        );
    }
    out
}

/// Every delivered message is consumed exactly where it was acknowledged,
/// with its key, value, headers and timestamp; each partition holds its
/// messages in the order they were produced, at consecutive offsets.
fn check(
    delivered: &[(i32, i64, usize)],
    consumed: &BTreeMap<i32, Vec<Got>>,
    codec: &str,
    base_offset: i64,
) {
    let mut at: HashMap<(i32, i64), usize> = HashMap::new();
    for &(p, o, i) in delivered {
        assert!(
            at.insert((p, o), i).is_none(),
            "offset {p}:{o} acknowledged twice"
        );
    }
    let mut key_partition: HashMap<String, i32> = HashMap::new();
    for (&p, msgs) in consumed {
        let mut last_index = None;
        for (n, g) in msgs.iter().enumerate() {
            assert_eq!(g.offset, base_offset + n as i64, "partition {p} offsets");
            let i = *at
                .get(&(p, g.offset))
                .unwrap_or_else(|| panic!("{p}:{} was never acknowledged", g.offset));
            assert_eq!(g.key, key(i));
            assert_eq!(g.value, value(i, codec));
            assert_eq!(
                g.headers,
                vec![
                    ("index".into(), i.to_string()),
                    ("codec".into(), codec.into())
                ]
            );
            assert_eq!(g.timestamp, TIMESTAMP_BASE_MS + i as i64);
            assert!(
                last_index < Some(i),
                "partition {p}: {i} after {last_index:?}"
            );
            last_index = Some(i);
            let kp = key_partition.entry(g.key.clone()).or_insert(p);
            assert_eq!(*kp, p, "key {} in two partitions", g.key);
        }
    }
    let total: usize = consumed.values().map(|v| v.len()).sum();
    assert_eq!(total, delivered.len());
}

// 100 000 keyed messages with headers per codec, acks=all with
// idempotence, through two shards; all consumed back intact and in order,
// and the uncompressed ones again from disk after a restart.
// Batches for partitions owned by the other shard are forwarded without a
// copy (the shards' counters, logged at shutdown, say so).
#[test]
fn produce_and_consume_in_every_codec() {
    let data = tempdir();
    let mut b = Broker::start(data.path(), SHARDS, &[]);
    let n: usize = std::env::var("SLUICE_TEST_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let mut uncompressed = Vec::new();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        create_topic(&b, &topic, 8, &[]);
        let delivered = produce(&b, &topic, n, codec, "all");
        let consumed = consume(&b, &topic, 8, n);
        assert_eq!(consumed.len(), 8, "every partition got messages");
        check(&delivered, &consumed, codec, 0);
        if codec == "none" {
            uncompressed = delivered;
        }
    }
    b.stop();
    // Read back cold after a restart (nothing cached): through the log's
    // read-ahead, whose batches are slices, or pieces, of its own read
    // buffers, on both shards and between them.
    let again = Broker::start(data.path(), SHARDS, &[]);
    let consumed = consume(&again, "codec-none", 8, n);
    check(&uncompressed, &consumed, "none", 0);
    drop(again);
    let log = b.drain(Duration::from_millis(100));
    let forwarded: u64 = log
        .lines()
        .filter_map(|l| l.split("forwarded_batches=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert!(forwarded > 0, "no batch crossed shards\n{log}");
    assert!(
        log.lines()
            .filter(|l| l.contains("shard stopped"))
            .all(|l| l.contains("forwarded_batches_copied=0")),
        "{log}"
    );
}

// Acknowledged messages survive a clean restart and a kill -9, and the
// idempotent producers' state survives too (a new producer continues).
#[test]
fn acknowledged_messages_survive_restart_and_kill() {
    let data = tempdir();
    let port = common::free_port();
    let mut b = Broker::start_on(data.path(), SHARDS, port, &[]);
    create_topic(&b, "durable", 4, &[]);
    let first = produce(&b, "durable", 5_000, "lz4", "all");
    b.stop();

    let mut b = Broker::start_on(data.path(), SHARDS, port, &[]);
    let consumed = consume(&b, "durable", 4, 5_000);
    check(&first, &consumed, "lz4", 0);
    // Now no clean shutdown: every message acknowledged before the kill
    // must be there afterwards.
    let second = produce(&b, "durable", 5_000, "lz4", "all");
    b.kill();

    let b = Broker::start_on(data.path(), SHARDS, port, &[]);
    let consumed = consume(&b, "durable", 4, 10_000);
    let mut all = first.clone();
    all.extend(second.iter().map(|&(p, o, i)| (p, o, i)));
    // The second run reused indexes 0..5000; check each run separately.
    let split = |from_second: bool| -> BTreeMap<i32, Vec<Got>> {
        consumed
            .iter()
            .map(|(&p, v)| {
                let firsts = first.iter().filter(|d| d.0 == p).count();
                let part: Vec<Got> = if from_second {
                    v[firsts..].to_vec()
                } else {
                    v[..firsts].to_vec()
                };
                (p, part)
            })
            .collect()
    };
    check(&first, &split(false), "lz4", 0);
    for (&p, msgs) in &split(true) {
        let base = first.iter().filter(|d| d.0 == p).count() as i64;
        let second_p: Vec<(i32, i64, usize)> =
            second.iter().filter(|d| d.0 == p).copied().collect();
        let mut one = BTreeMap::new();
        one.insert(p, msgs.clone());
        check(&second_p, &one, "lz4", base);
    }
}

// Watermarks and offsets for times, through librdkafka.
#[test]
fn list_offsets_watermarks_and_times() {
    let data = tempdir();
    let b = Broker::start(data.path(), SHARDS, &[]);
    create_topic(&b, "offsets", 2, &[]);
    let delivered = produce(&b, "offsets", 1_000, "none", "1");
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .create()
        .unwrap();
    let mut total = 0;
    for p in 0..2 {
        let (lo, hi) = c
            .fetch_watermarks("offsets", p, Duration::from_secs(10))
            .unwrap();
        assert_eq!(lo, 0);
        assert_eq!(hi as usize, delivered.iter().filter(|d| d.0 == p).count());
        total += hi;
    }
    assert_eq!(total, 1_000);
    // The first offset at or after a time is the first message produced
    // at or after it; past the newest message there is none (-1 / End).
    let i = 700;
    let (p, o, _) = *delivered.iter().find(|d| d.2 == i).unwrap();
    let expect = delivered
        .iter()
        .filter(|d| d.0 == p && d.2 >= i)
        .map(|d| d.1)
        .min()
        .unwrap();
    assert_eq!(expect, o);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("offsets", p, Offset::Offset(TIMESTAMP_BASE_MS + i as i64))
        .unwrap();
    let r = c.offsets_for_times(tpl, Duration::from_secs(10)).unwrap();
    assert_eq!(
        r.find_partition("offsets", p).unwrap().offset(),
        Offset::Offset(expect)
    );
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("offsets", p, Offset::Offset(TIMESTAMP_BASE_MS + 5_000))
        .unwrap();
    let r = c.offsets_for_times(tpl, Duration::from_secs(10)).unwrap();
    assert_eq!(
        r.find_partition("offsets", p).unwrap().offset(),
        Offset::End
    );
}

// Topic create / describe configs / alter configs / create partitions /
// delete through the admin API; the data of a deleted topic leaves the
// disk, and metadata survives a restart.
#[test]
fn admin_api() {
    let data = tempdir();
    let port = common::free_port();
    let mut b = Broker::start_on(data.path(), SHARDS, port, &[]);
    let a = admin(&b);
    let opts = AdminOptions::new();
    create_topic(&b, "admin-a", 3, &[("retention.ms", "3600000")]);
    // Refusals: existing name, bad name, bad config, bad replication.
    let r = block_on(a.create_topics(
        &[
            NewTopic::new("admin-a", 1, TopicReplication::Fixed(1)),
            NewTopic::new("bad/name", 1, TopicReplication::Fixed(1)),
            NewTopic::new("admin-b", 1, TopicReplication::Fixed(1)).set("segment.bytes", "1"),
            NewTopic::new("admin-c", 1, TopicReplication::Fixed(3)),
        ],
        &opts,
    ))
    .unwrap();
    let codes: Vec<String> = r
        .iter()
        .map(|r| format!("{:?}", r.as_ref().unwrap_err().1))
        .collect();
    assert_eq!(
        codes,
        [
            "TopicAlreadyExists",
            "InvalidTopic",
            "InvalidConfig",
            "InvalidReplicationFactor"
        ]
    );
    let described = |b: &AdminClient<DefaultClientContext>| {
        let r =
            block_on(b.describe_configs(&[ResourceSpecifier::Topic("admin-a")], &opts)).unwrap();
        let r = r.into_iter().next().unwrap().unwrap();
        r.entries
            .iter()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect::<BTreeMap<_, _>>()
    };
    let cfg = described(&a);
    assert_eq!(cfg["retention.ms"], "3600000");
    assert_eq!(cfg["cleanup.policy"], "delete");
    assert!(cfg.contains_key("segment.bytes"), "{cfg:?}");
    let r = block_on(a.alter_configs(
        &[AlterConfig::new(ResourceSpecifier::Topic("admin-a")).set("retention.bytes", "1048576")],
        &opts,
    ))
    .unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    let cfg = described(&a);
    assert_eq!(cfg["retention.bytes"], "1048576");
    // AlterConfigs replaces the whole set: retention.ms is back to default.
    assert_ne!(cfg["retention.ms"], "3600000");
    let r = block_on(a.create_partitions(&[NewPartitions::new("admin-a", 5)], &opts)).unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    let r = block_on(a.create_partitions(&[NewPartitions::new("admin-a", 2)], &opts)).unwrap();
    assert!(r[0].is_err(), "{r:?}");
    let md = a
        .inner()
        .fetch_metadata(Some("admin-a"), Duration::from_secs(10))
        .unwrap();
    assert_eq!(md.topics()[0].partitions().len(), 5);

    create_topic(&b, "admin-gone", 2, &[]);
    produce(&b, "admin-gone", 100, "none", "all");
    assert!(data.path().join("admin-gone-0").exists());
    let r = block_on(a.delete_topics(&["admin-gone", "admin-never"], &opts)).unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    assert!(r[1].is_err(), "{r:?}");
    for p in 0..2 {
        assert!(!data.path().join(format!("admin-gone-{p}")).exists());
    }
    drop(a);
    b.stop();

    // Metadata is durable: after a restart the topic, its partitions and
    // its configs are all there, and the deleted topic is not.
    let b = Broker::start_on(data.path(), SHARDS, port, &[]);
    let a = admin(&b);
    let cfg = described(&a);
    assert_eq!(cfg["retention.bytes"], "1048576");
    let md = a
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    let names: Vec<&str> = md.topics().iter().map(|t| t.name()).collect();
    assert_eq!(names, ["admin-a"]);
    assert_eq!(md.topics()[0].partitions().len(), 5);
    assert_eq!(md.brokers().len(), 1);
    assert_eq!(md.brokers()[0].port() as u16, port);
}

// Auto-creation: producing to an unknown topic creates it with the
// default partition count; with auto-creation off the topic is unknown.
#[test]
fn auto_create_topics() {
    let data = tempdir();
    let b = Broker::start(data.path(), SHARDS, &["--default-partitions", "3"]);
    produce(&b, "auto-made", 10, "none", "1");
    let md = admin(&b)
        .inner()
        .fetch_metadata(Some("auto-made"), Duration::from_secs(10))
        .unwrap();
    assert_eq!(md.topics()[0].partitions().len(), 3);
    drop(b);

    let data = tempdir();
    let b = Broker::start(data.path(), SHARDS, &["--auto-create-topics", "false"]);
    let md = admin(&b)
        .inner()
        .fetch_metadata(Some("not-made"), Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        md.topics()[0].error(),
        Some(rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
    );
}
