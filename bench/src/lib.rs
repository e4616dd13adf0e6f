//! What the benchmark scenarios share: running a `sluice serve` process,
//! framing Kafka requests by hand, pinning client threads, medians.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// A whole request frame.
pub fn frame<R: Encodable>(api: ApiKey, version: i16, id: i32, body: &R) -> Vec<u8> {
    sluice_net::client::encode_request(api, version, id, "sluice-bench", body)
        .unwrap()
        .to_vec()
}

/// Keeps `window` requests in flight on one connection until `count` are
/// answered; returns how long that took. `next(i, out)` appends request
/// `i` (correlation id `i`) to `out`; `answer(i, frame)` gets answer `i`
/// without its length prefix. One thread, a non-blocking socket and
/// `poll`: requests go out as soon as the window and the socket allow and
/// answers are parsed out of large reads, so the client stays cheap.
pub fn pipeline(
    port: u16,
    count: usize,
    window: usize,
    mut next: impl FnMut(usize, &mut Vec<u8>),
    mut answer: impl FnMut(usize, Bytes),
) -> Duration {
    use std::os::fd::AsRawFd;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_nonblocking(true).unwrap();
    let (mut sent, mut answered) = (0usize, 0usize);
    let mut out: Vec<u8> = Vec::new();
    let mut out_pos = 0usize;
    let mut inbuf: Vec<u8> = vec![0; 1 << 20];
    let (mut start, mut end) = (0usize, 0usize);
    let started = std::time::Instant::now();
    while answered < count {
        while sent < count && sent < answered + window {
            next(sent, &mut out);
            sent += 1;
        }
        let mut pfd = libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN
                | if out_pos < out.len() {
                    libc::POLLOUT
                } else {
                    0
                },
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 30_000) };
        if pfd.revents & libc::POLLOUT != 0 {
            match s.write(&out[out_pos..]) {
                Ok(n) => out_pos += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("write: {e}"),
            }
            if out_pos == out.len() {
                out.clear();
                out_pos = 0;
            }
        }
        if pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            if start > 0 {
                inbuf.copy_within(start..end, 0);
                end -= start;
                start = 0;
            }
            match s.read(&mut inbuf[end..]) {
                Ok(0) => panic!("the broker closed the connection"),
                Ok(n) => end += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("read: {e}"),
            }
            while end - start >= 4 {
                let len = i32::from_be_bytes(inbuf[start..start + 4].try_into().unwrap()) as usize;
                if end - start < 4 + len {
                    break;
                }
                answer(
                    answered,
                    Bytes::copy_from_slice(&inbuf[start + 4..start + 4 + len]),
                );
                start += 4 + len;
                answered += 1;
            }
        }
    }
    started.elapsed()
}

pub fn read_frame(s: &mut impl Read) -> Bytes {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    Bytes::from(body)
}

pub fn pin_this_thread(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// target/<profile> of this benchmark or example (target/<profile>/deps/x
/// or target/<profile>/examples/x).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf()
}

/// Whether `cmd` is on PATH.
pub fn on_path(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The `sluice` binary next to this benchmark or example
/// (target/<profile>/deps/x or target/<profile>/examples/x ->
/// target/<profile>/sluice), or SLUICE_BIN.
pub fn broker_bin() -> PathBuf {
    let bin = std::env::var("SLUICE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| profile_dir().join("sluice"));
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build --release -p sluice-broker), or set SLUICE_BIN",
        bin.display()
    );
    bin
}

/// A broker process, stopped with SIGTERM when dropped.
pub struct Served(Child);

impl Served {
    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

/// CPU time, user and system, that process `pid` has used so far, in
/// seconds (`/proc/PID/stat`); 0 when it cannot be read.
pub fn process_cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) in brackets:
    // utime and stime are the 12th and 13th.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) as f64 / hz
}

impl Drop for Served {
    fn drop(&mut self) {
        // SAFETY: signals the child this process started.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// The cache budget of every benchmark's shard.
pub const BENCH_CACHE_BYTES: usize = 256 << 20;

/// `sluice serve --cores 1` (its shard on CPU 0) on a fresh data directory.
pub fn serve(bin: &Path, data: &Path, port: u16) -> Served {
    serve_listening(bin, data, &format!("127.0.0.1:{port}"), &[])
}

/// As [`serve`], with `--listen LISTEN` and more arguments.
pub fn serve_listening(bin: &Path, data: &Path, listen: &str, extra: &[&str]) -> Served {
    let _ = std::fs::remove_dir_all(data);
    let mut child = Command::new(bin)
        .args(["serve", "--cores", "1", "--listen", listen])
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        // The storage benchmarks' cache budget, so a run of a few hundred
        // MiB measures the broker with its cache full (evicting and
        // reusing memory), as in production, not while it fills.
        .env(
            "SLUICE_CACHE_BYTES_MAX",
            std::env::var("SLUICE_CACHE_BYTES_MAX").unwrap_or(BENCH_CACHE_BYTES.to_string()),
        )
        .env(
            "SLUICE_LOG",
            std::env::var("SLUICE_BENCH_LOG").unwrap_or("warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let mut out = child.stdout.take().unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while out.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    assert!(
        String::from_utf8_lossy(&line).contains("serving"),
        "broker did not start"
    );
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    Served(child)
}

/// Creates a topic with the given configs.
pub fn create_topic(port: u16, name: &str, partitions: i32, configs: &[(&str, String)]) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![create_topics_request::CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(1)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        create_topics_request::CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(k.to_string()))
                            .with_value(Some(StrBytes::from_string(v.clone())))
                    })
                    .collect(),
            )]);
    s.write_all(&frame(ApiKey::CreateTopics, 7, 1, &req))
        .unwrap();
    let mut f = read_frame(&mut s);
    ResponseHeader::decode(&mut f, ApiKey::CreateTopics.response_header_version(7)).unwrap();
    let r = CreateTopicsResponse::decode(&mut f, 7).unwrap();
    assert_eq!(r.topics[0].error_code, 0, "{r:?}");
}
