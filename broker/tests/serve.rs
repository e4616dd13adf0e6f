//! `sluice serve` as a user runs it: recovers a data directory written by
//! the storage engine, reports it, and stops cleanly on SIGTERM; refuses to
//! start with a clear message when the host cannot run it.

use std::io::{Read, Write};

use kafka_protocol::protocol::Decodable;
use std::path::Path;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::Duration;

use glommio::Placement;
use sluice_storage::batch::build;
use sluice_storage::{LogConfig, PartitionLog, ShardCache, SystemClock};

mod common;

use common::{free_port, tempdir, Broker, BIN};

/// Writes `batches` batches of 3 records into `<dir>/<name>` and leaves the
/// last few bytes of the active segment torn, as a crash would.
fn write_partition(dir: &Path, batches: usize) {
    let dir = dir.to_path_buf();
    let ex = sluice_storage::runtime::executor_builder(
        Placement::Unbound,
        256 * 1024,
        std::time::Duration::ZERO,
    )
    .make()
    .unwrap();
    ex.run(async move {
        let cache = ShardCache::new(1 << 20);
        let log = PartitionLog::open(&dir, LogConfig::default(), &cache, Rc::new(SystemClock))
            .await
            .unwrap();
        for i in 0..batches {
            log.append(build::uniform(3, 100, i as i64)).await.unwrap();
        }
        log.close().await.unwrap();
    });
}

/// `sluice serve` on one shard, listening on loopback `port`.
fn serve_command(data: &Path, port: u16) -> Command {
    let mut c = Command::new(BIN);
    c.args([
        "serve",
        "--cores",
        "1",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
    ])
    .arg(data)
    .env("SLUICE_SHARD_MEMORY_BYTES", (128u64 << 20).to_string());
    c
}

fn spawn_serve(data: &Path) -> Broker {
    Broker::spawn(data, 1, free_port(), &[])
}

#[test]
fn serve_recovers_the_data_dir_and_stops_on_sigterm() {
    let data = tempdir();
    write_partition(&data.path().join("orders-0"), 10);
    write_partition(&data.path().join("orders-1"), 4);
    // Tear the tail of one partition: half of its last batch is gone.
    let seg = data.path().join("orders-0/00000000000000000000.log");
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    std::fs::create_dir(data.path().join("not a partition")).unwrap();

    let mut b = spawn_serve(data.path());
    assert!(
        b.wait_for_all(&[
            "sluice: serving 2 partition(s)",
            "log_end=27",
            "log_end=12",
            "cutting 288 bytes"
        ]),
        "{:#?}",
        b.seen
    );
    let all = b.seen.join("\n");
    assert!(
        all.contains("log_end=27"),
        "torn batch cut: 9 whole batches of 3 remain\n{all}"
    );
    assert!(all.contains("log_end=12"), "{all}");
    assert!(
        all.contains("cutting 288 bytes of torn or corrupt tail"),
        "{all}"
    );
    b.stop();

    // Both were written and closed cleanly, but the torn one no longer
    // matches its mark: it was read, the other was not.
    let first = b
        .seen
        .iter()
        .find(|l| l.contains("sluice: serving"))
        .unwrap();
    assert!(first.contains("1 of them closed cleanly"), "{first}");

    // A clean restart finds the cut tail gone and nothing to repair, and
    // reads no log tail: the stop left each log a clean-shutdown mark.
    let mut b = spawn_serve(data.path());
    assert!(b.wait_for("bytes of torn tail cut"), "{:#?}", b.seen);
    let line = b.seen.last().unwrap().clone();
    assert!(line.contains(" 0 bytes of torn tail cut"), "{line}");
    assert!(
        line.contains("2 of them closed cleanly, 0 bytes scanned"),
        "{line}"
    );
    b.signal(libc::SIGINT);
    assert!(b.child.wait().unwrap().success());

    // After kill -9 there is no mark (the open removed it): the tails
    // are read again.
    let mut b = spawn_serve(data.path());
    assert!(b.wait_for("sluice: serving"), "{:#?}", b.seen);
    b.kill();
    let mut b = spawn_serve(data.path());
    assert!(b.wait_for("bytes of torn tail cut"), "{:#?}", b.seen);
    let line = b.seen.last().unwrap().clone();
    assert!(line.contains("0 of them closed cleanly"), "{line}");
    assert!(!line.contains(" 0 bytes scanned"), "{line}");
    b.stop();
}

#[test]
fn serve_explains_a_locked_memory_limit_too_small() {
    let data = tempdir();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -l 128 && exec {BIN} serve --data-dir {}",
            data.path().display()
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("locked-memory limit (ulimit -l) is 128 KiB"),
        "{err}"
    );
}

#[test]
fn serve_refuses_bad_arguments() {
    let mut out = String::new();
    let mut c = Command::new(BIN)
        .args(["serve", "--cores", "0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stderr.take().unwrap().read_to_string(&mut out).unwrap();
    assert_eq!(c.wait().unwrap().code(), Some(2));
    assert!(out.contains("--cores 0"), "{out}");

    // A misspelt SLUICE_* variable is named, not ignored.
    let data = tempdir();
    let out = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(data.path())
        .env("SLUICE_LISTENER", "127.0.0.1:1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("SLUICE_LISTENER"), "{err}");
}

/// Each thread of process `pid`: its name and the CPUs it may run on.
fn thread_cpus(pid: u32) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        let (Ok(comm), Ok(status)) = (
            std::fs::read_to_string(t.join("comm")),
            std::fs::read_to_string(t.join("status")),
        ) else {
            continue; // the thread ended
        };
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap();
        let cpus = sluice_tuning::host::parse_cpu_list(list).unwrap();
        out.push((comm.trim().to_string(), cpus));
    }
    out
}

/// The CPU shard `shard`'s executor thread is pinned to: the one thread of
/// that shard bound to a single CPU (its blocking-pool threads are not).
fn shard_cpu(threads: &[(String, Vec<usize>)], shard: usize) -> Vec<usize> {
    let prefix = format!("sluice-shard-{shard}");
    threads
        .iter()
        .filter(|(name, cpus)| name.starts_with(&prefix) && cpus.len() == 1)
        .map(|(_, cpus)| cpus[0])
        .collect()
}

// Proves shards run on the CPUs the process was given, in order: under a
// one-CPU affinity mask (taskset, a cpuset) every broker thread stays on
// that CPU, and with the whole machine shard N is on the N-th CPU. Before,
// shards were pinned over every online CPU in a hash set's order, so a
// broker started on CPU 1 could put its shard on CPU 0 beside a load
// generator started there.
#[test]
fn shards_run_on_the_cpus_the_process_may_use() {
    let allowed = sluice_tuning::host::allowed_cpus();
    let last = *allowed.last().unwrap();
    let data = tempdir();
    let port = free_port();
    let mut c = serve_command(data.path(), port);
    c.env("SLUICE_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: between fork and exec the child only calls
    // sched_setaffinity on itself, which is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut c, move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(last, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = c.spawn().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("sluice: serving") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0,
            "the broker exited before serving"
        );
    }
    let threads = thread_cpus(child.id());
    // SAFETY: signals the child this test spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    assert!(threads.iter().any(|(n, _)| n.starts_with("sluice-shard-0")));
    for (name, cpus) in &threads {
        assert_eq!(cpus, &vec![last], "{name} left CPU {last}: {threads:?}");
    }

    if allowed.len() >= 2 {
        let data = tempdir();
        let mut b = Broker::start(data.path(), 2, &[]);
        let threads = thread_cpus(b.child.id());
        b.stop();
        assert_eq!(shard_cpu(&threads, 0), vec![allowed[0]], "{threads:?}");
        assert_eq!(shard_cpu(&threads, 1), vec![allowed[1]], "{threads:?}");
    }
}

mod wire {
    use bytes::{Buf, BufMut, Bytes, BytesMut};
    use kafka_protocol::messages::{
        ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    use std::io::{Read, Write};
    use std::net::TcpStream;

    pub fn api_versions_frame(version: i16, correlation_id: i32) -> Vec<u8> {
        let mut body = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(ApiKey::ApiVersions as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("serve-test")))
            .encode(
                &mut body,
                ApiKey::ApiVersions.request_header_version(version.min(4)),
            )
            .unwrap();
        ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("serve-test"))
            .with_client_software_version(StrBytes::from_static_str("1"))
            .encode(&mut body, version.min(4))
            .unwrap();
        let mut out = BytesMut::new();
        out.put_i32(body.len() as i32);
        out.extend_from_slice(&body);
        out.to_vec()
    }

    pub fn read_frame(c: &mut TcpStream) -> std::io::Result<Bytes> {
        let mut len = [0u8; 4];
        c.read_exact(&mut len)?;
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        c.read_exact(&mut body)?;
        Ok(Bytes::from(body))
    }

    /// Sends ApiVersions at `version` and decodes the answer at `answer_version`.
    pub fn api_versions(
        c: &mut TcpStream,
        version: i16,
        answer_version: i16,
        id: i32,
    ) -> ApiVersionsResponse {
        c.write_all(&api_versions_frame(version, id)).unwrap();
        let mut f = read_frame(c).unwrap();
        assert_eq!(
            ResponseHeader::decode(&mut f, 0).unwrap().correlation_id,
            id
        );
        let r = ApiVersionsResponse::decode(&mut f, answer_version).unwrap();
        assert!(!f.has_remaining());
        r
    }
}

/// True when the peer closed the connection (EOF) within the read timeout.
fn closed(c: &mut std::net::TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(c.read(&mut b), Ok(0))
}

// Proves the broker answers ApiVersions on every connection (KIP-511 for an
// unknown version), and that a bad frame closes only its own connection.
#[test]
fn serve_answers_api_versions_and_closes_bad_connections() {
    let data = tempdir();
    let port = free_port();
    let mut b = Broker::start_on(data.path(), 1, port, &[]);
    let connect = || {
        let c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c
    };
    let mut good = connect();
    let r = wire::api_versions(&mut good, 3, 3, 1);
    assert_eq!(r.error_code, 0);
    let av = r
        .api_keys
        .iter()
        .find(|k| k.api_key == 18)
        .expect("ApiVersions listed");
    assert_eq!((av.min_version, av.max_version), (0, 4));
    // KIP-511: an unknown version gets a v0 answer with the ranges.
    let r = wire::api_versions(&mut good, 99, 0, 2);
    assert_eq!(r.error_code, 35);
    assert!(r.api_keys.iter().any(|k| k.api_key == 18));

    // Pipelined: many requests in one write, answered in request order.
    let burst: Vec<u8> = (100..150i32)
        .flat_map(|id| wire::api_versions_frame((id % 5) as i16, id))
        .collect();
    good.write_all(&burst).unwrap();
    for id in 100..150 {
        let mut f = wire::read_frame(&mut good).unwrap();
        let h = kafka_protocol::messages::ResponseHeader::decode(&mut f, 0).unwrap();
        assert_eq!(h.correlation_id, id, "responses in request order");
    }

    let bad_frames: Vec<(&str, Vec<u8>)> = vec![
        ("negative length", (-1i32).to_be_bytes().to_vec()),
        (
            "length over the limit",
            (200 * 1024 * 1024i32).to_be_bytes().to_vec(),
        ),
        ("length below a header", 3i32.to_be_bytes().to_vec()),
        (
            "unknown API key",
            [
                &12i32.to_be_bytes()[..],
                &[0x03, 0xe7, 0, 0, 0, 0, 0, 9, 0xff, 0xff, 0, 0],
            ]
            .concat(),
        ),
        ("truncated body", {
            let mut f = wire::api_versions_frame(3, 5);
            f.truncate(f.len() - 3);
            let len = (f.len() - 4) as i32;
            f[..4].copy_from_slice(&len.to_be_bytes());
            f
        }),
        (
            "unsupported API",
            [
                &10i32.to_be_bytes()[..],
                &[0, 0, 0, 9, 0, 0, 0, 3, 0xff, 0xff],
            ]
            .concat(),
        ),
    ];
    for (what, bytes) in bad_frames {
        let mut c = connect();
        c.write_all(&bytes).unwrap();
        assert!(closed(&mut c), "{what}: connection closed");
        // Every other connection is still served.
        let r = wire::api_versions(&mut good, 0, 0, 3);
        assert_eq!(r.error_code, 0, "{what}: other connections unaffected");
    }
    b.signal(libc::SIGTERM);
    assert!(
        b.wait_for_all(&["stopped cleanly", "connection closed"]),
        "a clean stop, and a log line per closed connection: {:#?}",
        b.seen
    );
    assert!(b.child.wait().unwrap().success());
    // One line for each of the six bad connections (they may arrive after
    // the stop line: stderr is read on its own thread).
    let count = |seen: &Vec<String>| {
        seen.iter()
            .filter(|l| l.contains("connection closed"))
            .count()
    };
    while count(&b.seen) < 6 {
        match b.lines.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => b.seen.push(line),
            Err(_) => break,
        }
    }
    assert_eq!(count(&b.seen), 6, "{:#?}", b.seen);
}

// Proves a port already taken is reported and the broker exits non-zero.
#[test]
fn serve_reports_a_listen_address_in_use() {
    let data = tempdir();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = serve_command(data.path(), port).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen"), "{err}");
}

/// The io_uring workers of process `pid`: (thread id, runs SCHED_FIFO).
fn io_workers(pid: u32) -> Vec<(i32, bool)> {
    let dir = std::path::PathBuf::from(format!("/proc/{pid}/task"));
    sluice_tuning::io_workers::io_worker_threads(&dir)
        .into_iter()
        .map(|t| (t, sluice_tuning::io_workers::is_fifo(t)))
        .collect()
}

/// Produces with acks=all until the broker has io_uring workers (the
/// segment's extending writes and the fdatasync run on them).
fn produce_until_io_workers(b: &Broker) -> Vec<(i32, bool)> {
    use common::wire::{create_topic, produce, Wire};
    let mut w = Wire::connect(b.port);
    create_topic(&mut w, "durable", 1);
    for round in 0..200 {
        let records = sluice_storage::batch::build::uniform(64, 1000, 1_700_000_000_000);
        assert_eq!(produce(&mut w, "durable", 0, records).0, 0, "round {round}");
        let workers = io_workers(b.child.id());
        if !workers.is_empty() {
            return workers;
        }
    }
    panic!("no io_uring worker after 200 durable produces");
}

// Proves the broker gives its io_uring workers (which run extending
// writes and fdatasync, and otherwise wait for the CPU behind a polling
// shard) SCHED_FIFO by default when the host permits it, says so in a
// warning when it does not, and leaves them alone with
// `--io-worker-priority normal`.
#[test]
fn io_uring_workers_get_realtime_priority_unless_told_not_to() {
    let data = tempdir();
    let mut b = Broker::start(data.path(), 1, &[]);
    // Whether this host lets the broker (same user) use SCHED_FIFO: try it
    // on a thread of this test.
    let permitted = std::thread::spawn(|| {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        sluice_tuning::io_workers::set_fifo(tid, 1).is_ok()
    })
    .join()
    .unwrap();
    let mut workers = produce_until_io_workers(&b);
    if permitted {
        // The promoter looks every IO_WORKER_SCAN_MS; allow many looks.
        for _ in 0..100 {
            if workers.iter().all(|w| w.1) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            workers = io_workers(b.child.id());
        }
        assert!(
            !workers.is_empty() && workers.iter().all(|w| w.1),
            "{workers:?}"
        );
        assert!(b.wait_for("get SCHED_FIFO"), "{:#?}", b.seen);
    } else {
        assert!(
            b.wait_for("io_uring workers stay at normal priority"),
            "{:#?}",
            b.seen
        );
    }
    b.stop();

    let data = tempdir();
    let mut b = Broker::start(data.path(), 1, &["--io-worker-priority", "normal"]);
    produce_until_io_workers(&b);
    std::thread::sleep(Duration::from_millis(
        sluice_tuning::limits::IO_WORKER_SCAN_MS * 6,
    ));
    let workers = io_workers(b.child.id());
    assert!(workers.iter().all(|w| !w.1), "{workers:?}");
    b.stop();
    assert!(
        !b.seen.iter().any(|l| l.contains("SCHED_FIFO")),
        "{:#?}",
        b.seen
    );
}

// Proves a stop finishes the requests it had read: a long-poll fetch
// waiting for data when SIGTERM comes is answered (at once, with no
// records) before its connection closes, an idle connection is closed,
// and the broker stops cleanly without waiting out the fetch.
#[test]
fn a_stop_answers_requests_in_flight_before_closing_connections() {
    use common::wire::{create_topic, fetch_request, Wire};
    use kafka_protocol::messages::{ApiKey, FetchResponse};
    let dir = tempdir();
    let mut b = Broker::start(dir.path(), 1, &[]);
    let mut w = Wire::connect(b.port);
    create_topic(&mut w, "waiting", 1);
    let mut idle = Wire::connect(b.port);
    // Nothing at offset 0 yet: the fetch waits up to 20 s for data.
    let id = w.send(
        ApiKey::Fetch,
        12,
        &fetch_request("waiting", 0, 0, 20_000, 1 << 20),
    );
    std::thread::sleep(Duration::from_millis(300));
    b.signal(libc::SIGTERM);
    let (got, r): (i32, FetchResponse) = w.recv(ApiKey::Fetch, 12);
    assert_eq!(got, id);
    assert_eq!(r.responses[0].partitions[0].error_code, 0);
    assert!(w.closed(), "the connection stays open after its answer");
    assert!(idle.closed(), "an idle connection stays open");
    assert!(b.wait_for("stopped cleanly"), "{:#?}", b.seen);
    assert!(b.child.wait().unwrap().success());
    // The fetch was answered when the stop began, not when its wait ran
    // out (which would have outlasted the shard's drain).
    assert!(
        !b.seen.iter().any(|l| l.contains("when the drain ended")),
        "{:#?}",
        b.seen
    );
}
