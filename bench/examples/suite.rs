//! The benchmark suite: one command that starts a sluice broker on a fresh
//! data directory, measures this machine's limits in the same run (fio:
//! direct sequential write with fdatasync, direct sequential read of one
//! file and of two at once; iperf3: loopback), runs the standard workloads
//! with `sluice loadgen`, and writes `target/bench/suite.json`, a
//! Markdown table and each workload's loadgen page (`target/suite/w1.html`
//! ... of the last round).
//!
//!     cargo build --release -p sluice-broker
//!     cargo run --release -p sluice-bench --example suite
//!
//! SLUICE_SUITE_REPEATS (default 3): rounds; each round measures the
//! limits and then every workload, and each workload is reported as the
//! median over rounds of its ratio to the limit of its own round.
//! SLUICE_SUITE_SECONDS (default 10): measured seconds per workload.
//! SLUICE_SUITE_BACKLOG (default 2GB). SLUICE_SUITE_DIR (default
//! target/suite). The broker runs on CPU 0, the load generator on CPU 1.
//!
//! Every workload runs on a fresh broker (a new process on an empty data
//! directory) started with default flags apart from its CPU and ports: no
//! cache or memory settings, the run a new user makes. One more line
//! compares a fresh broker's first seconds of W1 with the same broker's
//! W1 after 2 GB more have been written.
//! fio, iperf3 and chromium are installed with apt when missing (as root).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use sluice_bench::{free_port, median, on_path, profile_dir};

fn ensure_tools() {
    let missing: Vec<&str> = ["fio", "iperf3", "chromium", "taskset"]
        .into_iter()
        .filter(|c| !on_path(c))
        .collect();
    if missing.is_empty() {
        return;
    }
    let pkgs: Vec<&str> = missing
        .iter()
        .map(|c| if *c == "taskset" { "util-linux" } else { c })
        .collect();
    eprintln!("suite: installing {}", pkgs.join(" "));
    let ok = Command::new("sh")
        .args([
            "-c",
            &format!(
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {}",
                pkgs.join(" ")
            ),
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "cannot install {pkgs:?}: install them and run again");
}

fn run_json(cmd: &mut Command) -> Value {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{cmd:?}: not JSON: {e}"))
}

/// The disk's limits, in bytes per second, from fio with direct I/O:
/// sequential write (1 MiB, depth 4, fdatasync every 4 writes, like
/// acks=all group commit), sequential read of one file (256 KiB, depth
/// 16), and the same depth split over two files read at once, the shape
/// of W4b (two partitions caught up together; two streams read slower
/// than one on some disks). fio's buffers are in transparent huge pages,
/// as the broker's are (`sluice_storage::dma_memory`): from scattered
/// 4 KiB pages this disk reads up to a third slower.
struct DiskLimits {
    write: f64,
    read: f64,
    read_two_files: f64,
}

fn fio_limits(dir: &Path) -> DiskLimits {
    let file = dir.join("fio.dat");
    let second = dir.join("fio2.dat");
    let fio = |args: &[&str]| {
        let mut c = Command::new("fio");
        // glibc advises its mmap'd blocks (fio's buffers) for huge pages,
        // and fio starts its buffers on a huge page's boundary.
        c.env("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1");
        // Options before the first --name apply to every job.
        c.args([
            "--output-format=json",
            "--ioengine=io_uring",
            "--direct=1",
            "--iomem_align=2m",
        ])
        .args(args);
        run_json(&mut c)
    };
    let f = |p: &Path| format!("--filename={}", p.display());
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(&second);
    let w = fio(&[
        "--name=limit",
        &f(&file),
        "--size=2G",
        "--rw=write",
        "--bs=1M",
        "--iodepth=4",
        "--fdatasync=4",
    ]);
    let r = fio(&[
        "--name=limit",
        &f(&file),
        "--size=2G",
        "--rw=read",
        "--bs=256k",
        "--iodepth=16",
    ]);
    // The second file, then both read at once (depth 8 each), reported
    // as one group.
    fio(&[
        "--name=fill",
        &f(&second),
        "--size=1G",
        "--rw=write",
        "--bs=1M",
        "--iodepth=4",
    ]);
    let r2 = fio(&[
        "--size=1G",
        "--rw=read",
        "--bs=256k",
        "--iodepth=8",
        "--group_reporting",
        "--name=a",
        &f(&file),
        "--name=b",
        &f(&second),
    ]);
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(&second);
    DiskLimits {
        write: w["jobs"][0]["write"]["bw_bytes"].as_f64().unwrap(),
        read: r["jobs"][0]["read"]["bw_bytes"].as_f64().unwrap(),
        read_two_files: r2["jobs"][0]["read"]["bw_bytes"].as_f64().unwrap(),
    }
}

/// iperf3 over loopback, one stream, bytes per second.
fn loopback_limit() -> f64 {
    let port = free_port().to_string();
    let mut server = Command::new("iperf3")
        .args(["-s", "-1", "-p", &port])
        .stdout(Stdio::null())
        .spawn()
        .expect("iperf3 runs");
    std::thread::sleep(Duration::from_millis(300));
    let v =
        run_json(Command::new("iperf3").args(["-c", "127.0.0.1", "-p", &port, "-t", "3", "-J"]));
    let _ = server.wait();
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap()
        / 8.0
}

struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    fn start(bin: &Path, data: &Path, fresh: bool) -> Broker {
        if fresh {
            let _ = std::fs::remove_dir_all(data);
        }
        let port = free_port();
        let mut child = Command::new("taskset")
            .args(["-c", "0"])
            .arg(bin)
            .args([
                "serve",
                "--cores",
                "1",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("--data-dir")
            .arg(data)
            .env("SLUICE_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("sluice serve runs");
        let mut out = child.stdout.take().unwrap();
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while std::io::Read::read(&mut out, &mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
            line.push(b[0]);
        }
        assert!(
            String::from_utf8_lossy(&line).contains("serving"),
            "broker did not start"
        );
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        Broker { child, port }
    }

    fn stop(mut self) {
        // SAFETY: signals the child this process started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// `sluice loadgen` on CPU 1; returns its JSON report.
fn loadgen(bin: &Path, broker: &Broker, out: &Path, args: &[String]) -> Value {
    let status = Command::new("taskset")
        .args(["-c", "1"])
        .arg(bin)
        .args(["loadgen", "--bootstrap", &broker.bootstrap(), "--json"])
        .arg(out)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("sluice loadgen runs");
    assert!(status.success(), "sluice loadgen {args:?} failed");
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

fn delete_topic(bin: &Path, broker: &Broker, topic: &str) {
    let _ = Command::new(bin)
        .args(["topic", "delete", topic, "--bootstrap", &broker.bootstrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn free_bytes(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: statvfs writes into the struct we own; the path is a valid
    // C string.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return 0;
        }
        st.f_bavail as u64 * st.f_frsize as u64
    }
}

fn drop_caches() -> bool {
    // SAFETY: sync has no arguments.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn main() {
    ensure_tools();
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let repeats: usize = env("SLUICE_SUITE_REPEATS", "3").parse().expect("a count");
    let seconds = format!("{}s", env("SLUICE_SUITE_SECONDS", "10"));
    let backlog = env("SLUICE_SUITE_BACKLOG", "2GB");
    let backlog_bytes = sluice_loadgen::args::parse_bytes(&backlog).expect("a byte count");
    // target/<profile>/examples/suite: the binaries are one level up.
    let target = profile_dir();
    let bin = sluice_bench::broker_bin();
    let dir = std::env::var("SLUICE_SUITE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| target.join("../suite"));
    std::fs::create_dir_all(&dir).unwrap();
    // Bulk workloads write about a gigabyte a second while they run (the
    // topic is deleted after each): refuse to start without room.
    let free = free_bytes(&dir);
    let need: u64 = 40 << 30;
    assert!(
        free >= need,
        "{}: {} GiB free; the suite needs {} GiB (SLUICE_SUITE_DIR elsewhere)",
        dir.display(),
        free >> 30,
        need >> 30
    );
    let report = dir.join("loadgen.json");
    let html = dir.join("w3.html");
    let data = dir.join("data");

    // Every workload's producers: 2 partitions, 2 producers, 1000-byte
    // messages.
    let producing = |consumers: &str, batch: &str, acks: &str| {
        args(&[
            "--partitions",
            "2",
            "--producers",
            "2",
            "--consumers",
            consumers,
            "--message-bytes",
            "1000",
            "--batch-bytes",
            batch,
            "--acks",
            acks,
        ])
    };
    let bulk = |acks: &str, batch: &str| {
        let mut a = producing("0", batch, acks);
        a.extend(args(&[
            "--max-in-flight",
            "5",
            "--duration",
            &seconds,
            "--warmup",
            "3s",
        ]));
        a
    };
    let mut rounds = Vec::new();
    for round in 0..repeats {
        eprintln!("suite: round {} of {repeats}: limits", round + 1);
        let disk = fio_limits(&dir);
        let loopback = loopback_limit();
        let mut r = json!({
            "fio_write_bytes_per_sec": disk.write,
            "fio_read_bytes_per_sec": disk.read,
            "fio_read_two_files_bytes_per_sec": disk.read_two_files,
            "loopback_bytes_per_sec": loopback,
        });
        // Each workload on a fresh broker with default flags; each
        // leaves its loadgen page (`w1.html` ...; the last round's stay).
        let w = |name: &str, topic: &str, a: Vec<String>| -> Value {
            eprintln!("suite: round {}: {name}", round + 1);
            let broker = Broker::start(&bin, &data, true);
            let mut a = a;
            let page = name.split_whitespace().next().unwrap_or("w").to_lowercase();
            a.extend(args(&["--topic", topic, "--html"]));
            a.push(dir.join(format!("{page}.html")).display().to_string());
            let v = loadgen(&bin, &broker, &report, &a);
            broker.stop();
            v
        };
        let w1 = w(
            "W1 durable bulk",
            &format!("w1-{round}"),
            bulk("all", "1048576"),
        );
        let w2 = w(
            "W2 durable small batches",
            &format!("w2-{round}"),
            bulk("all", "102400"),
        );
        let mut w3a = producing("1", "102400", "all");
        // A latency workload: at 50 MB/s over 2 partitions a 100 KB batch
        // takes 8 ms to fill, so with loadgen's default 5 ms linger every
        // message would wait for the linger, and p99 would measure it.
        w3a.extend(args(&[
            "--linger-ms",
            "1",
            "--rate",
            "50MB",
            "--duration",
            &seconds,
            "--warmup",
            "3s",
        ]));
        let w3 = w("W3 durable latency at 50 MB/s", &format!("w3-{round}"), w3a);
        let w5 = w(
            "W5 acks=1 bulk",
            &format!("w5-{round}"),
            bulk("1", "1048576"),
        );
        let w4a = w("W4a hot catch-up", &format!("w4-{round}"), {
            let mut a = producing("2", "1048576", "1");
            a.extend(args(&["--backlog", &backlog]));
            a
        });
        // A fresh broker's first seconds of W1 against its W1 after 2 GB
        // more are written.
        eprintln!("suite: round {}: fresh against written", round + 1);
        let broker = Broker::start(&bin, &data, true);
        let timed = |topic: &str| {
            let mut a = producing("0", "1048576", "all");
            a.extend(args(&[
                "--duration",
                &seconds,
                "--warmup",
                "0s",
                "--topic",
                topic,
            ]));
            a
        };
        let first = loadgen(&bin, &broker, &report, &timed(&format!("fresh-{round}")));
        let mut a = producing("0", "1048576", "all");
        a.extend(args(&[
            "--messages",
            "2000000",
            "--topic",
            &format!("fill-{round}"),
        ]));
        loadgen(&bin, &broker, &report, &a);
        let after = loadgen(&bin, &broker, &report, &timed(&format!("after-{round}")));
        broker.stop();

        // W4b: the same backlog after a restart with the page cache dropped.
        let broker = Broker::start(&bin, &data, true);
        let topic = format!("w4b-{round}");
        let mut a = producing("0", "1048576", "1");
        a.extend(args(&["--topic", &topic]));
        a.extend(args(&["--messages", &(backlog_bytes / 1000).to_string()]));
        eprintln!("suite: round {}: W4b writing the backlog", round + 1);
        loadgen(&bin, &broker, &report, &a);
        broker.stop();
        let dropped = drop_caches();
        let broker = Broker::start(&bin, &data, false);
        eprintln!("suite: round {}: W4b cold catch-up", round + 1);
        let w4b = loadgen(
            &bin,
            &broker,
            &report,
            &args(&["--topic", &topic, "--producers", "0", "--consumers", "2"]),
        );
        delete_topic(&bin, &broker, &topic);
        broker.stop();
        let mb = |v: &Value, side: &str| v[side]["mb_per_sec"].as_f64().unwrap() * 1e6;
        r["w1_bytes_per_sec"] = json!(mb(&w1, "produce"));
        r["w2_bytes_per_sec"] = json!(mb(&w2, "produce"));
        r["w3_produce_latency_us"] = w3["produce_latency_us"].clone();
        r["w3_end_to_end_latency_us"] = w3["end_to_end_latency_us"].clone();
        r["w3_bytes_per_sec"] = json!(mb(&w3, "produce"));
        r["w4a_bytes_per_sec"] = json!(mb(&w4a, "consume"));
        r["w4b_bytes_per_sec"] = json!(mb(&w4b, "consume"));
        r["w4b_page_cache_dropped"] = json!(dropped);
        r["w5_bytes_per_sec"] = json!(mb(&w5, "produce"));
        r["fresh_first_bytes_per_sec"] = json!(mb(&first, "produce"));
        r["fresh_after_2gb_bytes_per_sec"] = json!(mb(&after, "produce"));
        r["fresh_ratio"] = json!(mb(&first, "produce") / mb(&after, "produce"));
        r["errors"] = json!([
            w1["produce"]["errors"],
            w2["produce"]["errors"],
            w3["produce"]["errors"],
            w5["produce"]["errors"],
            w4a["consume"]["errors"],
            w4b["consume"]["errors"]
        ]);
        eprintln!("suite: round {}: {r}", round + 1);
        rounds.push(r);
    }
    // The W3 page must render: headless Chromium prints it to a PNG.
    let png = dir.join("w3.png");
    let _ = std::fs::remove_file(&png);
    let rendered = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=900,1300",
        ])
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.canonicalize().unwrap().display()))
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        && std::fs::metadata(&png).is_ok_and(|m| m.len() > 10_000);
    assert!(
        rendered,
        "the HTML report did not render in headless Chromium"
    );

    let get = |r: &Value, k: &str| r[k].as_f64().unwrap_or(0.0);
    let med = |f: &dyn Fn(&Value) -> f64| median(rounds.iter().map(f).collect());
    let mb = 1e6;
    // (workload, its figure and spread over rounds, the limit it is a
    // share of). The peer's figures come from the side-by-side run
    // (`--example peer`), measured in the same session as sluice's.
    let spread = |key: &str| {
        let mut v: Vec<f64> = rounds.iter().map(|r| get(r, key) / mb).collect();
        v.sort_by(f64::total_cmp);
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let row = |name: &str, key: &str, limit: &str, limit_name: &str| {
        let v = med(&|r| get(r, key)) / mb;
        let ratio = med(&|r| get(r, key) / get(r, limit));
        (
            name.to_string(),
            v,
            spread(key),
            ratio,
            limit_name.to_string(),
        )
    };
    let (fw, fr, lo) = (
        "fio_write_bytes_per_sec",
        "fio_read_bytes_per_sec",
        "loopback_bytes_per_sec",
    );
    let rows = vec![
        row(
            "W1 durable bulk (1 MB batches, acks=all)",
            "w1_bytes_per_sec",
            fw,
            "fio write",
        ),
        row(
            "W2 durable small batches (100 KB, acks=all)",
            "w2_bytes_per_sec",
            fw,
            "fio write",
        ),
        row(
            "W4a hot catch-up (2 consumers)",
            "w4a_bytes_per_sec",
            lo,
            "loopback",
        ),
        row(
            "W4b cold catch-up (after restart)",
            "w4b_bytes_per_sec",
            fr,
            "fio read",
        ),
        row(
            "W4b, against reading two files at once",
            "w4b_bytes_per_sec",
            "fio_read_two_files_bytes_per_sec",
            "fio read, 2 files",
        ),
        row("W5 acks=1 bulk", "w5_bytes_per_sec", fw, "fio write"),
    ];
    let pct = |side: &str, p: &str| med(&|r: &Value| r[side][p].as_f64().unwrap_or(0.0)) / 1000.0;
    let mut table = String::from(
        "| workload | MB/s (median) | rounds, sorted | ratio to limit | limit |\n|---|---|---|---|---|\n",
    );
    for (name, v, rounds_mb, ratio, limit) in &rows {
        table.push_str(&format!(
            "| {name} | {v:.0} | {rounds_mb} | {ratio:.2} | {limit} |\n"
        ));
    }
    table.push_str(&format!(
        "| W1 on a fresh broker: first {seconds} against {seconds} after 2 GB written | {:.0} / {:.0} | {} | **{:.2}** | goal 0.95 |\n",
        med(&|r| get(r, "fresh_first_bytes_per_sec")) / mb,
        med(&|r| get(r, "fresh_after_2gb_bytes_per_sec")) / mb,
        {
            let mut v: Vec<f64> = rounds.iter().map(|r| get(r, "fresh_ratio")).collect();
            v.sort_by(f64::total_cmp);
            v.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(" / ")
        },
        med(&|r| get(r, "fresh_ratio")),
    ));
    table.push_str(&format!(
        "| W3 durable latency at 50 MB/s | {:.0} | produce p50 {:.2} / p99 {:.2} / p99.99 {:.2} ms; end to end p50 {:.2} / p99 {:.2} / p99.99 {:.2} ms | | |\n",
        med(&|r| get(r, "w3_bytes_per_sec")) / mb,
        pct("w3_produce_latency_us", "p50"),
        pct("w3_produce_latency_us", "p99"),
        pct("w3_produce_latency_us", "p9999"),
        pct("w3_end_to_end_latency_us", "p50"),
        pct("w3_end_to_end_latency_us", "p99"),
        pct("w3_end_to_end_latency_us", "p9999"),
    ));
    let limits = format!(
        "limits (median): fio write {:.0} MB/s, fio read {:.0} MB/s ({:.0} MB/s two files at once), loopback {:.0} MB/s",
        med(&|r| get(r, "fio_write_bytes_per_sec")) / mb,
        med(&|r| get(r, "fio_read_bytes_per_sec")) / mb,
        med(&|r| get(r, "fio_read_two_files_bytes_per_sec")) / mb,
        med(&|r| get(r, "loopback_bytes_per_sec")) / mb,
    );
    println!("suite: median of {repeats} rounds, {seconds} per workload\n{limits}\n\n{table}");
    let out = target.join("../bench");
    let _ = std::fs::create_dir_all(&out);
    std::fs::write(
        out.join("suite.json"),
        serde_json::to_string_pretty(&json!({
            "repeats": repeats,
            "seconds_per_workload": seconds,
            "backlog": backlog,
            "rounds": rounds,
            "table": table,
            "limits": limits,
            "html_rendered": rendered,
        }))
        .unwrap(),
    )
    .unwrap();
}
