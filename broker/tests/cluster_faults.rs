//! Faults against a three-node cluster under load: an idempotent acks=all
//! librdkafka producer writes numbered messages to three partitions while
//! leaders are killed with SIGKILL and restarted, and nodes are frozen
//! with SIGSTOP and thawed. A checker keeps every acknowledged
//! (partition, offset, value); at the end every message was acknowledged,
//! and reading each partition back from the start finds each acknowledged
//! value at its offset, every value exactly once, in the order sent. The
//! longest time any partition had no live leader is printed, not
//! asserted. Bounded: a fixed number of faults, every wait capped.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::*;
use common::tempdir;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

const TOPIC: &str = "faults";
const PARTITIONS: i32 = 3;

/// What the producer was told of each message: (partition, offset) or
/// the error, by message number.
type Delivered = Result<(i32, i64), String>;

#[derive(Clone, Default)]
struct Checker(Arc<Mutex<HashMap<u64, Delivered>>>);

impl ClientContext for Checker {}

impl ProducerContext for Checker {
    type DeliveryOpaque = Box<u64>;
    fn delivery(&self, r: &DeliveryResult<'_>, n: Box<u64>) {
        let outcome = match r {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.to_string()),
        };
        self.0.lock().unwrap().insert(*n, outcome);
    }
}

/// (leader, ISR) of every partition as `port` answers, if it does.
fn layout(port: u16) -> Option<Vec<(i32, Vec<i32>)>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{port}"))
        .create()
        .ok()?;
    let md = c.fetch_metadata(Some(TOPIC), Duration::from_secs(5)).ok()?;
    let t = md.topics().first()?;
    let ps: Vec<(i32, Vec<i32>)> = t
        .partitions()
        .iter()
        .map(|p| (p.leader(), p.isr().to_vec()))
        .collect();
    (ps.len() == PARTITIONS as usize).then_some(ps)
}

/// Waits (at most 60 s) until `port` reports every partition led by a
/// node other than `not` with `isr` in-sync replicas at least; the time
/// it took.
fn wait_layout(port: u16, not: i32, isr: usize, what: &str) -> Duration {
    let t0 = Instant::now();
    let mut last = None;
    while t0.elapsed() < Duration::from_secs(60) {
        if let Some(ps) = layout(port) {
            if ps
                .iter()
                .all(|(l, i)| *l > 0 && *l != not && i.len() >= isr)
            {
                return t0.elapsed();
            }
            last = Some(ps);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what}: not within 60 s; last {last:?}");
}

/// Three nodes under `dir` and the topic (3 partitions, 3 replicas,
/// min.insync.replicas 2) with every follower in sync: the nodes, the
/// `--cluster` list and a bootstrap list naming all three.
fn three_nodes_with_topic(dir: &std::path::Path) -> (Vec<Node>, String, String) {
    let (nodes, _, spec) = start_three(dir);
    wait_status(nodes[0].port, "three nodes and a controller", |s| {
        reachable(s) == vec![1, 2, 3] && s["controller"].is_i64()
    });
    let bootstrap = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect::<Vec<_>>()
        .join(",");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let rt = futures_lite::future::block_on(
        admin.create_topics(
            &[NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(3))
                .set("min.insync.replicas", "2")],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ),
    )
    .unwrap();
    assert!(rt.iter().all(|r| r.is_ok()), "{rt:?}");
    wait_layout(nodes[0].port, -1, 3, "every follower in sync");
    (nodes, spec, bootstrap)
}

#[test]
fn acknowledged_records_survive_leader_kills_and_frozen_nodes() {
    let dir = tempdir();
    let (mut nodes, spec, bootstrap) = three_nodes_with_topic(dir.path());

    let checker = Checker::default();
    let producer: ThreadedProducer<Checker> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "120000")
        .set("topic.metadata.refresh.interval.ms", "500")
        .create_with_context(checker.clone())
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(0u64));
    let writer = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let value = format!("m{n:08}");
                let rec = BaseRecord::with_opaque_to(TOPIC, Box::new(n))
                    .partition((n % PARTITIONS as u64) as i32)
                    .payload(value.as_str());
                match producer.send::<str, str>(rec) {
                    Ok(()) => n += 1,
                    Err((e, _)) => panic!("send {n}: {e}"),
                }
                *sent.lock().unwrap() = n;
                std::thread::sleep(Duration::from_millis(2));
            }
            producer
                .flush(Duration::from_secs(120))
                .expect("every message delivered or failed within 120 s");
        })
    };

    // The faults, in a fixed order: kill -9 the leader of each partition
    // in turn (and restart it), freeze a leader past the election
    // timeout, freeze a follower.
    let mut longest = Duration::ZERO;
    let watch = |nodes: &[Node], not: i32| {
        nodes
            .iter()
            .find(|n| n.id != not && n.broker.is_some())
            .unwrap()
            .port
    };
    for round in 0..PARTITIONS as usize {
        std::thread::sleep(Duration::from_millis(700));
        let ps = layout(watch(&nodes, -1)).expect("metadata");
        let victim = ps[round].0;
        let vi = nodes.iter().position(|n| n.id == victim).unwrap();
        nodes[vi].broker.take().unwrap().kill();
        let gap = wait_layout(watch(&nodes, victim), victim, 1, "a new leader");
        eprintln!("kill -9 of node {victim}: every partition led again within {gap:?}");
        longest = longest.max(gap);
        std::thread::sleep(Duration::from_millis(500));
        nodes[vi].broker = Some(start(&nodes[vi], &spec));
        wait_layout(watch(&nodes, -1), -1, 3, "the restarted node back in sync");
    }
    for (what, pick_leader) in [("leader", true), ("follower", false)] {
        std::thread::sleep(Duration::from_millis(700));
        let ps = layout(watch(&nodes, -1)).expect("metadata");
        let victim = if pick_leader {
            ps[0].0
        } else {
            *ps[0].1.iter().find(|&&n| n != ps[0].0).unwrap()
        };
        let v = nodes.iter().find(|n| n.id == victim).unwrap();
        let b = v.broker.as_ref().unwrap();
        b.signal(libc::SIGSTOP);
        std::thread::sleep(Duration::from_millis(1500));
        if pick_leader {
            let gap = wait_layout(
                watch(&nodes, victim),
                victim,
                1,
                "a leader for a frozen one",
            );
            eprintln!("SIGSTOP of leader {victim}: led again after {gap:?} more");
        }
        b.signal(libc::SIGCONT);
        wait_layout(
            watch(&nodes, -1),
            -1,
            3,
            &format!("the thawed {what} back in sync"),
        );
    }
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let sent = *sent.lock().unwrap();
    eprintln!(
        "{sent} messages; longest time a partition had no live leader after a kill: {longest:?}"
    );

    // Every message was acknowledged.
    let outcomes = checker.0.lock().unwrap().clone();
    assert_eq!(outcomes.len() as u64, sent, "delivery reports missing");
    let failed: BTreeMap<u64, String> = outcomes
        .iter()
        .filter_map(|(n, o)| o.as_ref().err().map(|e| (*n, e.clone())))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {sent} failed: {:?}",
        failed.len(),
        failed.iter().take(10).collect::<Vec<_>>()
    );
    assert!(sent > 100, "only {sent} sent");

    // Read back: each acknowledged value at its offset, each once, in
    // order.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "checker")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut read: BTreeMap<(i32, i64), u64> = BTreeMap::new();
    let mut seen: HashMap<u64, (i32, i64)> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (read.len() as u64) < sent && Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = m.expect("consume");
        let v = std::str::from_utf8(m.payload().unwrap()).unwrap();
        let n: u64 = v[1..].parse().unwrap();
        let at = (m.partition(), m.offset());
        if let Some(first) = seen.insert(n, at) {
            panic!("message {n} at {first:?} and again at {at:?}");
        }
        read.insert(at, n);
    }
    for (n, o) in &outcomes {
        let at = o.clone().unwrap();
        assert_eq!(read.get(&at), Some(n), "message {n} acknowledged at {at:?}");
    }
    assert_eq!(read.len() as u64, sent, "records beyond those sent");
    for p in 0..PARTITIONS {
        let ns: Vec<u64> = read.range((p, 0)..(p + 1, 0)).map(|(_, n)| *n).collect();
        assert!(
            ns.windows(2).all(|w| w[0] < w[1]),
            "partition {p} out of order"
        );
    }
}

/// Produces `values` round-robin over the partitions with an idempotent
/// acks=all producer; every one must be acknowledged.
fn produce_all(bootstrap: &str, topic: &str, values: std::ops::Range<u64>) {
    let checker = Checker::default();
    let p: ThreadedProducer<Checker> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "60000")
        .create_with_context(checker.clone())
        .unwrap();
    let n = values.end - values.start;
    for v in values {
        let value = format!("m{v:08}");
        p.send::<str, str>(
            BaseRecord::with_opaque_to(topic, Box::new(v))
                .partition((v % PARTITIONS as u64) as i32)
                .payload(value.as_str()),
        )
        .unwrap();
    }
    p.flush(Duration::from_secs(90)).unwrap();
    let got = checker.0.lock().unwrap().clone();
    assert_eq!(got.len() as u64, n);
    assert!(got.values().all(|o| o.is_ok()), "{got:?}");
}

fn group_consumer(bootstrap: &str, group: &str) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("topic.metadata.refresh.interval.ms", "500")
        .create()
        .unwrap();
    c.subscribe(&[TOPIC]).unwrap();
    c
}

/// The partitions assigned to `c`.
fn assigned(c: &BaseConsumer) -> Vec<i32> {
    let mut ps: Vec<i32> = c
        .assignment()
        .unwrap()
        .elements()
        .iter()
        .map(|e| e.partition())
        .collect();
    ps.sort();
    ps
}

/// A consumer group on a cluster: two members bootstrapped at different
/// nodes find the same coordinator and split the partitions between
/// them; one member, committing each message, keeps consuming through a
/// kill -9 of a partition leader (not the coordinator) with no message
/// twice (no reset to the earliest offset) and none missed.
#[test]
fn a_consumer_group_keeps_consuming_through_a_leader_kill() {
    let dir = tempdir();
    let (mut nodes, _, all) = three_nodes_with_topic(dir.path());
    produce_all(&all, TOPIC, 0..300);

    // Two members through different nodes: one group, partitions split.
    let boot = |i: usize| format!("127.0.0.1:{}", nodes[i].port);
    let (a, b) = (
        group_consumer(&boot(0), "split"),
        group_consumer(&boot(1), "split"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let _ = a.poll(Duration::from_millis(100));
        let _ = b.poll(Duration::from_millis(100));
        let (pa, pb) = (assigned(&a), assigned(&b));
        if !pa.is_empty() && !pb.is_empty() && pa.len() + pb.len() == PARTITIONS as usize {
            assert!(pa.iter().all(|p| !pb.contains(p)), "{pa:?} {pb:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no split between the members: {pa:?} {pb:?}"
        );
    }
    drop((a, b));

    // One member commits every message; a leader that is not the
    // group's coordinator is killed half-way.
    let c = group_consumer(&all, "through");
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    let mut consume = |c: &BaseConsumer, until: usize| {
        let deadline = Instant::now() + Duration::from_secs(90);
        while seen.len() < until {
            assert!(
                Instant::now() < deadline,
                "stuck at {} of {until}",
                seen.len()
            );
            let Some(m) = c.poll(Duration::from_millis(200)) else {
                continue;
            };
            // A dead broker's connection is reported, and the client
            // carries on without it.
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("consumer: {e}");
                    continue;
                }
            };
            let v: u64 = std::str::from_utf8(m.payload().unwrap()).unwrap()[1..]
                .parse()
                .unwrap();
            *seen.entry(v).or_default() += 1;
            c.commit_message(&m, rdkafka::consumer::CommitMode::Sync)
                .expect("commit");
        }
    };
    consume(&c, 150);
    let coordinator = {
        use kafka_protocol::messages::{ApiKey, FindCoordinatorRequest, FindCoordinatorResponse};
        let mut k = sluice_net::client::Client::connect(&boot(2), Duration::from_secs(10)).unwrap();
        let (_, r): (i16, FindCoordinatorResponse) = k
            .call(ApiKey::FindCoordinator, (1, 1), |_| {
                FindCoordinatorRequest::default().with_key("through".to_string().into())
            })
            .unwrap();
        assert_eq!(r.error_code, 0, "{r:?}");
        r.node_id.0
    };
    let ps = layout(nodes[0].port).unwrap();
    let victim = ps
        .iter()
        .map(|(l, _)| *l)
        .find(|&l| l != coordinator)
        .expect("a leader other than the coordinator");
    let vi = nodes.iter().position(|n| n.id == victim).unwrap();
    nodes[vi].broker.take().unwrap().kill();
    let live = nodes
        .iter()
        .filter(|n| n.broker.is_some())
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect::<Vec<_>>()
        .join(",");
    produce_all(&live, TOPIC, 300..600);
    consume(&c, 600);
    // `sluice group` through a node that does not coordinate the group
    // reaches the one that does: its committed offsets, no lag.
    let other = nodes
        .iter()
        .find(|n| n.id != coordinator && n.broker.is_some())
        .unwrap();
    let addr = format!("127.0.0.1:{}", other.port);
    let (code, out, err) = common::run_sluice(
        &[
            "group",
            "describe",
            "through",
            "--json",
            "--bootstrap",
            &addr,
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let d: serde_json::Value = serde_json::from_str(&out).unwrap();
    let committed: i64 = d["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["committed"].as_i64().unwrap())
        .sum();
    assert_eq!(committed, 600, "{d}");
    let (code, out, err) = common::run_sluice(&["group", "list", "--bootstrap", &addr], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("through"), "{out}");
    let twice: Vec<(&u64, &usize)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "read more than once: {twice:?}");
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (0..600).collect::<Vec<_>>()
    );
}
