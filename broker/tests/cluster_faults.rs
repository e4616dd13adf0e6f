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
const OFFSETS_TOPIC: &str = "__sluice_offsets";
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

/// Three nodes under `dir` (with `extra` flags), registered and with a
/// controller: the nodes, the `--cluster` list and a bootstrap list
/// naming all three.
fn three_nodes_up(dir: &std::path::Path, extra: &[&str]) -> (Vec<Node>, String, String) {
    let (nodes, _, spec) = start_three_with(dir, extra);
    wait_status(nodes[0].port, "three nodes and a controller", |s| {
        reachable(s) == vec![1, 2, 3] && s["controller"].is_i64()
    });
    let bootstrap = running(&nodes);
    (nodes, spec, bootstrap)
}

/// A bootstrap list of the nodes running.
fn running(nodes: &[Node]) -> String {
    nodes
        .iter()
        .filter(|n| n.broker.is_some())
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect::<Vec<_>>()
        .join(",")
}

/// Creates `topic` through `bootstrap`.
fn create_topic(bootstrap: &str, topic: NewTopic<'_>) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let rt = futures_lite::future::block_on(admin.create_topics(
        &[topic],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ))
    .unwrap();
    assert!(rt.iter().all(|r| r.is_ok()), "{rt:?}");
}

/// Three nodes under `dir` and the topic (3 partitions, 3 replicas,
/// min.insync.replicas 2) with every follower in sync: the nodes, the
/// `--cluster` list and a bootstrap list naming all three.
fn three_nodes_with_topic(dir: &std::path::Path) -> (Vec<Node>, String, String) {
    let (nodes, spec, bootstrap) = three_nodes_up(dir, &[]);
    create_topic(
        &bootstrap,
        NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(3))
            .set("min.insync.replicas", "2"),
    );
    wait_layout(nodes[0].port, -1, 3, "every follower in sync");
    // The controller creates the committed-offsets topic once the nodes
    // registered; groups commit once its followers are in sync.
    wait_isr(&bootstrap, OFFSETS_TOPIC, |isr| isr.len() == 3);
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
        if at.1 < 0 {
            // librdkafka acknowledges without an offset a batch whose
            // request failed when the partition acknowledged a later
            // sequence of the same producer (so this one is stored too):
            // it must be in that partition, where is not known.
            let got = seen.get(n).map(|a| a.0);
            assert_eq!(
                got,
                Some(at.0),
                "message {n} acknowledged in partition {}",
                at.0
            );
            continue;
        }
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

/// The node FindCoordinator names for `group`, asked at `addr`, once
/// it names one (COORDINATOR_NOT_AVAILABLE while none leads the group's
/// offsets partition); at most 60 s.
fn find_coordinator(addr: &str, group: &str) -> i32 {
    use kafka_protocol::messages::{ApiKey, FindCoordinatorRequest, FindCoordinatorResponse};
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut k = sluice_net::client::Client::connect(addr, Duration::from_secs(10)).unwrap();
        let (_, r): (i16, FindCoordinatorResponse) = k
            .call(ApiKey::FindCoordinator, (1, 1), |_| {
                FindCoordinatorRequest::default().with_key(group.to_string().into())
            })
            .unwrap();
        if r.error_code == 0 {
            return r.node_id.0;
        }
        assert!(Instant::now() < deadline, "no coordinator: {r:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The sum of `group`'s committed offsets as `sluice group describe`
/// through `addr` gives them.
fn committed_sum(addr: &str, group: &str) -> Result<i64, String> {
    let (code, out, err) = common::run_sluice(
        &["group", "describe", group, "--json", "--bootstrap", addr],
        None,
    );
    if code != 0 {
        return Err(err);
    }
    let d: serde_json::Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    Ok(d["offsets"]
        .as_array()
        .ok_or_else(|| format!("no offsets: {d}"))?
        .iter()
        .map(|o| o["committed"].as_i64().unwrap_or(0))
        .sum())
}

/// A consumer group on a cluster: two members bootstrapped at different
/// nodes find the same coordinator and split the partitions between
/// them; one member, committing each message, keeps consuming through a
/// kill -9 of a partition leader (not the coordinator) with no message
/// twice (no reset to the earliest offset) and none missed. Then the
/// coordinator itself is killed: another node leads the group's offsets
/// partition and coordinates the group with every committed offset, and
/// the member carries on from them (again nothing twice, nothing missed).
#[test]
fn a_consumer_group_keeps_consuming_through_a_leader_kill() {
    let dir = tempdir();
    let (mut nodes, spec, all) = three_nodes_with_topic(dir.path());
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
    let uncommitted: std::cell::RefCell<std::collections::BTreeSet<u64>> = Default::default();
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
            // A commit refused because the coordinator moved (the new one
            // does not know the member until it joins again) leaves the
            // message uncommitted: it may come again, nothing else may.
            if let Err(e) = c.commit_message(&m, rdkafka::consumer::CommitMode::Sync) {
                eprintln!("commit of {v}: {e}");
                uncommitted.borrow_mut().insert(v);
            }
        }
    };
    consume(&c, 150);
    let coordinator = find_coordinator(&boot(2), "through");
    let ps = layout(nodes[0].port).unwrap();
    // Leaders start spread over the three nodes; a node that fell behind
    // on a loaded machine may have handed its partitions to another. When
    // the coordinator leads them all, a node that leads none goes
    // instead (the group then loses a follower, not a leader).
    let victim = ps
        .iter()
        .map(|(l, _)| *l)
        .find(|&l| l != coordinator)
        .unwrap_or_else(|| {
            eprintln!("the coordinator {coordinator} leads every partition: {ps:?}");
            nodes
                .iter()
                .map(|n| n.id)
                .find(|&id| id != coordinator)
                .unwrap()
        });
    let vi = nodes.iter().position(|n| n.id == victim).unwrap();
    nodes[vi].broker.take().unwrap().kill();
    let live = running(&nodes);
    produce_all(&live, TOPIC, 300..600);
    consume(&c, 600);
    assert!(
        uncommitted.borrow().is_empty(),
        "commits refused while the coordinator stayed: {uncommitted:?}"
    );
    // `sluice group` through a node that does not coordinate the group
    // reaches the one that does: its committed offsets, no lag.
    let other = nodes
        .iter()
        .find(|n| n.id != coordinator && n.broker.is_some())
        .unwrap();
    let addr = format!("127.0.0.1:{}", other.port);
    assert_eq!(committed_sum(&addr, "through"), Ok(600));
    let (code, out, err) = common::run_sluice(&["group", "list", "--bootstrap", &addr], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("through"), "{out}");

    // The killed node back and in sync again (the metadata log needs two
    // live nodes of three), then the coordinator killed.
    nodes[vi].broker = Some(start(&nodes[vi], &spec));
    wait_isr(&all, OFFSETS_TOPIC, |isr| isr.len() == 3);
    wait_layout(nodes[vi].port, -1, 3, "the restarted node in sync");
    let ci = nodes.iter().position(|n| n.id == coordinator).unwrap();
    nodes[ci].broker.take().unwrap().kill();
    let live: Vec<String> = nodes
        .iter()
        .filter(|n| n.broker.is_some())
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let moved = loop {
        let n = find_coordinator(&live[0], "through");
        if n != coordinator {
            break n;
        }
        assert!(Instant::now() < deadline, "the coordinator did not move");
        std::thread::sleep(Duration::from_millis(100));
    };
    // Every committed offset is at the new coordinator.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match committed_sum(&live[1], "through") {
            Ok(600) => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "offsets at the new coordinator {moved}: {other:?}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    produce_all(&live.join(","), TOPIC, 600..700);
    consume(&c, 700);
    let deadline = Instant::now() + Duration::from_secs(30);
    while committed_sum(&live[0], "through") != Ok(700) {
        // The last messages' commits may have been refused mid-rejoin.
        let _ = c.poll(Duration::from_millis(100));
        let _ = c.commit_consumer_state(rdkafka::consumer::CommitMode::Sync);
        assert!(Instant::now() < deadline, "700 not committed");
    }
    let uncommitted = uncommitted.into_inner();
    let twice: Vec<(&u64, &usize)> = seen
        .iter()
        .filter(|(v, n)| **n > 1 && !uncommitted.contains(v))
        .collect();
    assert!(
        twice.is_empty(),
        "read more than once though committed: {twice:?}"
    );
    assert!(uncommitted.iter().all(|&v| v >= 600), "{uncommitted:?}");
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (0..700).collect::<Vec<_>>()
    );
}

/// A follower away while its leader's retention deleted everything it
/// had (its whole log below the leader's log start) restarts its log at
/// the leader's start, copies what is there and rejoins the ISR (it used
/// to be refused OFFSET_OUT_OF_RANGE forever); a reader then finds the
/// retained records the same at every replica that leads.
#[test]
fn a_follower_behind_the_leaders_log_start_restarts_there_and_rejoins() {
    const SHORT: &str = "short";
    let dir = tempdir();
    let (mut nodes, spec, all) = three_nodes_up(dir.path(), &["--segment-bytes-min", "4096"]);
    create_topic(
        &all,
        NewTopic::new(SHORT, 1, TopicReplication::Fixed(3))
            .set("min.insync.replicas", "1")
            .set("segment.bytes", "65536")
            .set("retention.bytes", "262144"),
    );
    let ps = wait_isr(&all, SHORT, |isr| isr.len() == 3);
    let leader = ps[0].0;
    let fi = nodes.iter().position(|n| n.id != leader).unwrap();
    let produce = |bootstrap: &str, values: std::ops::Range<u64>| {
        let p: ThreadedProducer<Checker> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("acks", "1")
            .set("linger.ms", "5")
            .create_with_context(Checker::default())
            .unwrap();
        let pad = "x".repeat(1000);
        for v in values {
            let value = format!("m{v:08}{pad}");
            p.send::<str, str>(
                BaseRecord::with_opaque_to(SHORT, Box::new(v))
                    .partition(0)
                    .payload(value.as_str()),
            )
            .unwrap();
        }
        p.flush(Duration::from_secs(60)).unwrap();
    };
    produce(&all, 0..200);
    let watermarks = |bootstrap: &str| -> (i64, i64) {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .unwrap();
        c.fetch_watermarks(SHORT, 0, Duration::from_secs(10))
            .unwrap()
    };
    let (_, away_at) = watermarks(&all);
    nodes[fi].broker.take().unwrap().kill();
    let live = running(&nodes);
    // About 2 MB more: retention (every 10 s) takes the leader's log
    // start past everything the follower has.
    produce(&live, 200..2200);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (low, _) = watermarks(&live);
        if low > away_at {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retention did not pass {away_at}: log start {low}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    nodes[fi].broker = Some(start(&nodes[fi], &spec));
    // Asked of the leader: a node that just started may answer from
    // the metadata it had when it stopped.
    let li = nodes.iter().position(|n| n.id == leader).unwrap();
    wait_isr(&format!("127.0.0.1:{}", nodes[li].port), SHORT, |isr| {
        isr.len() == 3
    });
    // Its log now starts past where it stopped: restarted, not extended.
    let bases: Vec<i64> = std::fs::read_dir(nodes[fi].data.join(format!("{SHORT}-0")))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    assert!(
        !bases.is_empty() && bases.iter().all(|&b| b > away_at),
        "segments {bases:?}, stopped at {away_at}"
    );
    // The leader killed: the new one (either follower) serves the
    // retained records, each at its offset.
    nodes[li].broker.take().unwrap().kill();
    let live = running(&nodes);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (low, high) = loop {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &live)
            .create()
            .unwrap();
        if let Ok(w) = c.fetch_watermarks(SHORT, 0, Duration::from_secs(2)) {
            if w.1 == 2200 {
                break w;
            }
        }
        assert!(Instant::now() < deadline, "no new leader with every record");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(low > 0, "log start {low}");
    let boot = live;
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &boot)
        .set("group.id", "check")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(SHORT, 0, Offset::Offset(low))
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut next = low;
    let deadline = Instant::now() + Duration::from_secs(60);
    while next < high {
        assert!(
            Instant::now() < deadline,
            "read stopped at {next} of {high}"
        );
        let Some(Ok(m)) = c.poll(Duration::from_millis(200)) else {
            continue;
        };
        assert_eq!(m.offset(), next);
        let v = std::str::from_utf8(m.payload().unwrap()).unwrap();
        assert_eq!(&v[..9], format!("m{next:08}"), "offset {next}");
        next += 1;
    }
}

/// A partition moved off its only node to the two others while an
/// idempotent acks=all producer keeps writing (`sluice cluster reassign
/// --wait`): the new replicas copy the log, the move completes with the
/// lead on one of them, the old node drops its copy, and with the old
/// node killed every acknowledged message is read back from the new
/// replicas exactly once, in order.
#[test]
fn a_partition_moves_to_other_nodes_while_a_producer_writes() {
    const MOVING: &str = "moving";
    let dir = tempdir();
    let (mut nodes, _, all) = three_nodes_up(dir.path(), &[]);
    // One replica (`sluice topic create --replication-factor`).
    let (code, out, err) = common::run_sluice(
        &[
            "topic",
            "create",
            MOVING,
            "--replication-factor",
            "1",
            "--bootstrap",
            &all,
        ],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    let from = wait_isr(&all, MOVING, |isr| isr.len() == 1)[0].0;
    let to: Vec<i32> = nodes.iter().map(|n| n.id).filter(|&n| n != from).collect();
    let pad = "x".repeat(1000);
    let producer = |bootstrap: &str| -> ThreadedProducer<Checker> {
        ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "60000")
            .create_with_context(Checker::default())
            .unwrap()
    };
    let send = |p: &ThreadedProducer<Checker>, v: u64| {
        let value = format!("m{v:08}{pad}");
        p.send::<str, str>(
            BaseRecord::with_opaque_to(MOVING, Box::new(v))
                .partition(0)
                .payload(value.as_str()),
        )
        .unwrap();
    };
    // About 20 MB to copy, then writes while it moves.
    let p = producer(&all);
    for v in 0..20_000 {
        send(&p, v);
    }
    p.flush(Duration::from_secs(60)).unwrap();
    let writing = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            for v in 20_000..23_000 {
                send(&p, v);
                std::thread::sleep(Duration::from_millis(1));
            }
            p.flush(Duration::from_secs(90)).unwrap();
        });
        let replicas = to
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let (code, out, err) = common::run_sluice(
            &[
                "cluster",
                "reassign",
                MOVING,
                "--partition",
                "0",
                "--replicas",
                &replicas,
                "--wait",
                "--wait-secs",
                "120",
                "--bootstrap",
                &all,
            ],
            None,
        );
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("done in"), "{out}");
        writer.join().unwrap();
        out
    });
    eprintln!("{writing}");
    let got = p.context().0.lock().unwrap().clone();
    assert_eq!(got.len(), 23_000);
    assert!(
        got.values().all(|o| o.is_ok()),
        "every message acknowledged"
    );
    // The new replicas hold it, in sync, one of them leading.
    let fi = nodes.iter().position(|n| n.id == from).unwrap();
    let ps = wait_isr(
        &format!("127.0.0.1:{}", nodes[(fi + 1) % 3].port),
        MOVING,
        |isr| {
            let mut isr = isr.to_vec();
            isr.sort();
            isr == to
        },
    );
    assert!(to.contains(&ps[0].0), "leader {}", ps[0].0);
    // Nothing under way any more; a cancel of nothing is refused.
    let (code, out, _) = common::run_sluice(
        &["cluster", "reassignments", "--json", "--bootstrap", &all],
        None,
    );
    assert_eq!((code, out.trim()), (0, "[]"));
    let (code, _, err) = common::run_sluice(
        &[
            "cluster",
            "reassign",
            MOVING,
            "--partition",
            "0",
            "--cancel",
            "--bootstrap",
            &all,
        ],
        None,
    );
    assert_ne!(code, 0);
    assert!(err.contains("no reassignment"), "{err}");
    // The old node dropped its copy.
    let old_dir = nodes[fi].data.join(format!("{MOVING}-0"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while old_dir.exists() {
        assert!(
            Instant::now() < deadline,
            "{} still there",
            old_dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Killed, the old node serves nothing; the new replicas serve all.
    drop(p);
    nodes[fi].broker.take().unwrap().kill();
    let live = running(&nodes);
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &live)
        .set("group.id", "check")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(MOVING, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut next = 0u64;
    let deadline = Instant::now() + Duration::from_secs(90);
    while next < 23_000 {
        assert!(Instant::now() < deadline, "read stopped at {next}");
        let Some(Ok(m)) = c.poll(Duration::from_millis(200)) else {
            continue;
        };
        let v = std::str::from_utf8(m.payload().unwrap()).unwrap();
        assert_eq!(&v[..9], format!("m{next:08}"), "offset {}", m.offset());
        assert_eq!(got[&next], Ok((0, m.offset())));
        next += 1;
    }
}
