//! Three-node clusters on loopback for tests: starting nodes, asking
//! `sluice cluster status`, waiting for leaders and ISRs.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use serde_json::Value;

use super::{run_sluice, Broker};

pub struct Node {
    pub id: i32,
    pub port: u16,
    pub data: std::path::PathBuf,
    pub broker: Option<Broker>,
}

pub fn cluster_spec(nodes: &[(i32, u16)]) -> String {
    nodes
        .iter()
        .map(|(id, p)| format!("{id}@127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn start(n: &Node, spec: &str) -> Broker {
    start_with(n, spec, &[])
}

/// `start` with more flags.
pub fn start_with(n: &Node, spec: &str, extra: &[&str]) -> Broker {
    let id = n.id.to_string();
    let mut args = vec![
        "--node-id",
        &id,
        "--cluster",
        spec,
        "--election-timeout-ms",
        "300",
        "--idle-poll-us",
        "0",
    ];
    args.extend_from_slice(extra);
    Broker::start_on(&n.data, 1, n.port, &args)
}

/// Nodes 1, 2 and 3 started with data directories under `dir`: the
/// nodes, their node-to-node ports and the `--cluster` list.
pub fn start_three(dir: &std::path::Path) -> (Vec<Node>, Vec<(i32, u16)>, String) {
    start_three_with(dir, &[])
}

/// `start_three` with more flags for every node.
pub fn start_three_with(
    dir: &std::path::Path,
    extra: &[&str],
) -> (Vec<Node>, Vec<(i32, u16)>, String) {
    let ids = [1, 2, 3];
    let repl: Vec<(i32, u16)> = ids.iter().map(|&i| (i, super::free_port())).collect();
    let spec = cluster_spec(&repl);
    let mut nodes: Vec<Node> = ids
        .iter()
        .map(|&id| Node {
            id,
            port: super::free_port(),
            data: dir.join(format!("node-{id}")),
            broker: None,
        })
        .collect();
    for n in &mut nodes {
        n.broker = Some(start_with(n, &spec, extra));
    }
    (nodes, repl, spec)
}

/// `sluice cluster status --json` against `port`, if it answers.
pub fn status(port: u16) -> Option<Value> {
    let addr = format!("127.0.0.1:{port}");
    let (code, out, _) = run_sluice(&["cluster", "status", "--json", "--bootstrap", &addr], None);
    if code != 0 {
        return None;
    }
    serde_json::from_str(&out).ok()
}

/// Polls `status(port)` until `ok` holds of it (at most 60 s); returns it.
pub fn wait_status(port: u16, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(s) = status(port) {
            if ok(&s) {
                return s;
            }
            last = Some(s);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what}: not seen within 60 s; last status {last:#?}");
}

pub fn reachable(s: &Value) -> Vec<i64> {
    s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["reachable"] == true && n["address"].is_string())
        .map(|n| n["id"].as_i64().unwrap())
        .collect()
}

/// Each partition's (leader, ISR) as `bootstrap` gives them.
pub fn partitions(bootstrap: &str, topic: &str) -> Vec<(i32, Vec<i32>)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    md.topics()[0]
        .partitions()
        .iter()
        .map(|p| (p.leader(), p.isr().to_vec()))
        .collect()
}

/// Waits (at most 60 s) until every partition's ISR satisfies `ok`.
pub fn wait_isr(bootstrap: &str, topic: &str, ok: impl Fn(&[i32]) -> bool) -> Vec<(i32, Vec<i32>)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ps = partitions(bootstrap, topic);
        if !ps.is_empty() && ps.iter().all(|(_, isr)| ok(isr)) {
            return ps;
        }
        assert!(Instant::now() < deadline, "{topic}: ISRs {ps:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
