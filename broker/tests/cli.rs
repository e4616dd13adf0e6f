//! The admin CLI against a running broker: topics, produce, consume and
//! groups, checking the tables and the JSON, and that errors exit non-zero
//! with a message.

mod common;

use std::process::Command;

use common::{run_sluice, tempdir, Broker, BIN};

/// Runs `sluice <args> --bootstrap <broker>`; returns (status, stdout, stderr).
fn sluice(b: &Broker, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let bootstrap = b.bootstrap();
    let mut a = args.to_vec();
    a.extend(["--bootstrap", &bootstrap]);
    run_sluice(&a, stdin)
}

fn ok(b: &Broker, args: &[&str], stdin: Option<&str>) -> String {
    let (code, out, err) = sluice(b, args, stdin);
    assert_eq!(code, 0, "sluice {args:?}: {err}");
    out
}

fn json(b: &Broker, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    serde_json::from_str(&ok(b, &a, None)).unwrap()
}

// Topics: create, list, describe (table and JSON), alter-config, delete.
#[test]
fn topic_commands() {
    let data = tempdir();
    let b = Broker::start(data.path(), 2, &[]);
    let out = ok(
        &b,
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--config",
            "retention.ms=60000",
        ],
        None,
    );
    assert_eq!(out, "created topic orders with 3 partition(s)\n");
    ok(&b, &["topic", "create", "audit"], None);
    assert_eq!(
        ok(&b, &["topic", "list"], None),
        "TOPIC   PARTITIONS\naudit   1\norders  3\n"
    );
    assert_eq!(
        json(&b, &["topic", "list"]),
        serde_json::json!([{"name": "audit", "partitions": 1}, {"name": "orders", "partitions": 3}])
    );
    ok(&b, &["produce", "orders"], Some("x\ny\nz\nw\n"));
    let d = json(&b, &["topic", "describe", "orders"]);
    assert_eq!(d["configs"]["retention.ms"], "60000");
    let total: i64 = d["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["messages"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 4);
    let table = ok(&b, &["topic", "describe", "orders"], None);
    assert!(
        table.starts_with(
            "topic orders: 3 partition(s)\nPARTITION  LEADER  EPOCH  REPLICAS  ISR  START  END  MESSAGES\n"
        ),
        "{table}"
    );
    // A single broker leads every partition, its only replica.
    for p in d["partitions"].as_array().unwrap() {
        assert_eq!(p["leader"], 0, "{d}");
        assert_eq!(p["replicas"], serde_json::json!([0]), "{d}");
        assert_eq!(p["isr"], serde_json::json!([0]), "{d}");
    }
    assert!(table.contains("retention.ms            60000"), "{table}");
    ok(
        &b,
        &[
            "topic",
            "alter-config",
            "orders",
            "--set",
            "retention.ms=5000",
            "--delete",
            "segment.ms",
        ],
        None,
    );
    assert_eq!(
        json(&b, &["topic", "describe", "orders"])["configs"]["retention.ms"],
        "5000"
    );
    // Refusals exit non-zero and say why.
    let (code, _, err) = sluice(&b, &["topic", "create", "orders"], None);
    assert_eq!(code, 1);
    assert!(err.contains("TopicAlreadyExists"), "{err}");
    let (code, _, err) = sluice(
        &b,
        &[
            "topic",
            "alter-config",
            "orders",
            "--set",
            "retention.ms=soon",
        ],
        None,
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("InvalidConfig") && err.contains("not an integer"),
        "{err}"
    );
    ok(&b, &["topic", "delete", "audit"], None);
    assert_eq!(
        ok(&b, &["topic", "list"], None),
        "TOPIC   PARTITIONS\norders  3\n"
    );
    let (code, _, err) = sluice(&b, &["topic", "delete", "audit"], None);
    assert_eq!(code, 1);
    assert!(err.contains("UnknownTopicOrPartition"), "{err}");
}

// Produce with keys, consume with a template from the beginning, an
// offset, a time and a group; group list/describe with lag; reset-offsets;
// delete.
#[test]
fn produce_consume_and_group_commands() {
    let data = tempdir();
    let b = Broker::start(data.path(), 2, &[]);
    ok(&b, &["topic", "create", "t", "--partitions", "2"], None);
    let lines: String = (0..10).map(|i| format!("k{}\tv{i}\n", i % 3)).collect();
    assert_eq!(
        ok(&b, &["produce", "t", "--key-separator", "\t"], Some(&lines)),
        "produced 10 message(s) to t\n"
    );
    let all = ok(&b, &["consume", "t", "--format", "%p %o %k=%s\\n"], None);
    let mut got: Vec<&str> = all.lines().collect();
    assert_eq!(got.len(), 10);
    got.sort();
    // The same key always lands in the same partition, in order.
    for k in 0..3 {
        let parts: std::collections::BTreeSet<&str> = got
            .iter()
            .filter(|l| l.contains(&format!(" k{k}=")))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        assert_eq!(parts.len(), 1, "key k{k}: {all}");
    }
    let from_end = ok(&b, &["consume", "t", "--from", "end"], None);
    assert_eq!(from_end, "");
    // A topic that does not exist yet is created by the broker (it allows
    // that by default) when produced to, as a producer client's would be;
    // consuming does not create one.
    let (code, _, err) = sluice(&b, &["consume", "fresh"], None);
    assert_ne!(code, 0);
    assert!(
        err.contains("no topic fresh") || err.contains("fresh"),
        "{err}"
    );
    assert_eq!(
        ok(&b, &["produce", "fresh"], Some("one\ntwo\n")),
        "produced 2 message(s) to fresh\n"
    );
    assert_eq!(
        ok(&b, &["consume", "fresh", "--format", "%s\\n"], None),
        "one\ntwo\n"
    );
    let future = ok(&b, &["consume", "t", "--timestamp", "99999999999999"], None);
    assert_eq!(future, "");
    assert_eq!(
        ok(&b, &["consume", "t", "--timestamp", "0"], None)
            .lines()
            .count(),
        10
    );

    // A group consumes 4 and commits; the rest is its lag.
    let first = ok(
        &b,
        &["consume", "t", "--group", "g", "--commit", "--count", "4"],
        None,
    );
    assert_eq!(first.lines().count(), 4);
    assert_eq!(
        ok(&b, &["group", "list"], None),
        "GROUP  STATE  TYPE\ng      Empty  consumer\n"
    );
    let d = json(&b, &["group", "describe", "g"]);
    let lag: i64 = d["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["lag"].as_i64().unwrap())
        .sum();
    assert_eq!(lag, 6, "{d}");
    let table = ok(&b, &["group", "describe", "g"], None);
    assert!(
        table.contains("TOPIC  PARTITION  COMMITTED  END  LAG  MEMBER"),
        "{table}"
    );
    // The group resumes where it committed.
    let rest = ok(&b, &["consume", "t", "--group", "g", "--commit"], None);
    assert_eq!(rest.lines().count(), 6);
    let d = json(&b, &["group", "describe", "g"]);
    assert!(
        d["offsets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["lag"] == 0),
        "{d}"
    );
    // Reset to the start, and it reads everything again.
    let r = json(
        &b,
        &[
            "group",
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--to",
            "earliest",
        ],
    );
    assert_eq!(r["offsets"], serde_json::json!([0, 0]));
    assert_eq!(
        ok(&b, &["consume", "t", "--group", "g"], None)
            .lines()
            .count(),
        10
    );
    ok(&b, &["group", "delete", "g"], None);
    let (code, _, err) = sluice(&b, &["group", "describe", "g"], None);
    assert_eq!(code, 1);
    assert!(err.contains("no group g"), "{err}");
}

// Nothing listening: a clear error and a non-zero exit.
/// A single broker is a cluster of one: its own controller, reachable,
/// nothing under-replicated; a reassignment refused.
#[test]
fn cluster_status_of_a_single_broker() {
    let data = tempdir();
    let b = Broker::start(data.path(), 1, &["--node-id", "4"]);
    let s = json(&b, &["cluster", "status"]);
    assert_eq!(s["controller"], 4, "{s}");
    let nodes = s["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{s}");
    assert_eq!(nodes[0]["id"], 4);
    assert_eq!(nodes[0]["reachable"], true);
    assert_eq!(nodes[0]["address"], b.bootstrap().as_str());
    assert_eq!(s["under_replicated"].as_array().unwrap().len(), 0);
    let table = ok(&b, &["cluster", "status"], None);
    assert!(table.contains("controller node 4"), "{table}");
    assert!(table.contains("NODE  ADDRESS"), "{table}");
    // A single broker has nowhere to move replicas: refused, and no
    // move is ever under way.
    ok(&b, &["topic", "create", "t"], None);
    let (code, _, err) = sluice(
        &b,
        &[
            "cluster",
            "reassign",
            "t",
            "--partition",
            "0",
            "--replicas",
            "4",
        ],
        None,
    );
    assert_ne!(code, 0);
    assert!(err.contains("single broker"), "{err}");
    assert_eq!(
        json(&b, &["cluster", "reassignments"]),
        serde_json::json!([])
    );
}

#[test]
fn no_broker_is_a_clear_error() {
    let port = common::free_port();
    let out = Command::new(BIN)
        .args(["topic", "list", "--bootstrap", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to 127.0.0.1:"), "{err}");
}

/// `sluice tune` prints every check with the documented JSON fields,
/// changes nothing without --apply, and fails with a message where the
/// broker cannot run.
#[test]
fn tune_reports_checks() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let out = Command::new(BIN)
        .args(["tune", "--json", "--dry-run", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks = v["checks"].as_array().unwrap();
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    for want in [
        "io_uring",
        "locked memory (ulimit -l)",
        "O_DIRECT in the data directory",
        "vm.swappiness",
        "I/O scheduler",
    ] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    for c in checks {
        for k in ["name", "current", "recommended", "status", "why"] {
            assert!(c[k].is_string(), "{k} in {c}");
        }
        let s = c["status"].as_str().unwrap();
        assert!(["ok", "warn", "fail", "not applicable"].contains(&s), "{c}");
    }
    let table = Command::new(BIN)
        .args(["tune", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("CHECK"), "{text}");
    assert!(text.lines().count() > names.len(), "{text}");
    let bad = Command::new(BIN)
        .args(["tune", "--data-dir", "/proc/no-such-dir/x"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("data directory"));
}

/// `sluice iotune` measures a directory, writes the io-properties file
/// there, and `sluice serve` on that directory says it uses them; a
/// damaged file is reported and the defaults used; a CPU it may not run
/// on is refused.
#[test]
fn iotune_writes_properties_that_serve_reads() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let out = Command::new(BIN)
        .args(["iotune", "--json", "--duration", "2s", "--dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["seq_write"].as_array().unwrap().len(), 15, "{v}");
    for p in v["seq_write"].as_array().unwrap() {
        assert!(p["write_bytes_per_sec"].as_f64().unwrap() > 0.0, "{p}");
        assert!(
            p["latency_p50_us"].is_u64() && p["block_bytes"].is_u64(),
            "{p}"
        );
    }
    for s in v["fdatasync"].as_array().unwrap() {
        assert!(s["fdatasync_p50_us"].as_u64().unwrap() > 0, "{s}");
        assert!(s["executor_fdatasync_p50_us"].as_u64().unwrap() > 0, "{s}");
        assert!(s["syscall_p50_us"].as_u64().unwrap() > 0, "{s}");
    }
    assert!(v["seq_read_bytes_per_sec"].as_f64().unwrap() > 0.0);
    assert!(v["rand_read_4k_iops"].as_f64().unwrap() > 0.0);
    let chunk = v["properties"]["write_chunk_bytes"].as_u64().unwrap();
    let depth = v["properties"]["queue_depth"].as_u64().unwrap();
    // Only the properties file is left behind.
    let names: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["io-properties.toml"]);

    let sync_us = v["properties"]["sync_latency_us"].as_u64().unwrap();
    let window_ms = (sync_us * 50).div_ceil(1000).clamp(1, 1000);
    let mut b = Broker::start(&data, 1, &[]);
    let line = format!("writes of {} KiB, {depth} in flight", chunk / 1024);
    assert!(b.wait_for(&line), "serve did not report {line}");
    let line = format!("synced within {window_ms} ms");
    assert!(b.wait_for(&line), "serve did not report {line}");
    drop(b);

    std::fs::write(data.join("io-properties.toml"), "queue_depth = many\n").unwrap();
    let mut b = Broker::start(&data, 1, &[]);
    assert!(b.wait_for("io-properties ignored"));
    drop(b);

    // A CPU this process may not run on is refused before anything runs.
    let bad = Command::new(BIN)
        .args(["iotune", "--cpu", "100000", "--dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("--cpu 100000") && err.contains("may run on"),
        "{err}"
    );
}

/// `sluice --version` names the version and the commit it was built from.
#[test]
fn version_names_the_commit() {
    let (code, out, err) = run_sluice(&["--version"], None);
    assert_eq!(code, 0, "{err}");
    let want = format!("sluice {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(out.starts_with(&want), "{out}");
    let commit = out[want.len()..].trim_end().trim_end_matches(')');
    let hex = commit.trim_end_matches("-modified");
    assert!(
        hex == "unknown" || (hex.len() == 12 && hex.bytes().all(|b| b.is_ascii_hexdigit())),
        "{out}"
    );
}
