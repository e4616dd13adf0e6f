//! Running the real `sluice` binary from tests: a child process that is
//! killed when the test ends, its output lines on a channel.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub mod cluster;
pub mod wire;

/// SplitMix64: small, seedable, the same everywhere, so a failing seed
/// replays.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// True `per_mille` times in a thousand.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.next() % 1000 < per_mille
    }
}

pub const BIN: &str = env!("CARGO_BIN_EXE_sluice");

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sluice-broker-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

/// Runs `sluice ARGS` to its end with `stdin` as its input; returns
/// (status, stdout, stderr).
pub fn run_sluice(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    use std::io::Write;
    let mut c = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = c.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    let out = c.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A port nobody listens on right now, on loopback.
pub fn free_port() -> u16 {
    // Never the same port twice in one test process: the kernel may hand
    // a released port out again, and two brokers (or a broker's Kafka and
    // node-to-node ports) given the same one met each other's protocol.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A broker process that is killed if the test ends without stopping it,
/// so a failing test never leaves a broker behind.
pub struct Broker {
    pub child: std::process::Child,
    pub port: u16,
    pub lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Broker {
    /// `sluice serve` on `cores` shards on a free loopback port, with
    /// `extra` arguments; returns once it serves.
    pub fn start(data: &Path, cores: usize, extra: &[&str]) -> Broker {
        Broker::start_on(data, cores, free_port(), extra)
    }

    pub fn start_on(data: &Path, cores: usize, port: u16, extra: &[&str]) -> Broker {
        let mut b = Broker::spawn(data, cores, port, extra);
        assert!(b.wait_for("sluice: serving"), "{:#?}", b.seen);
        b
    }

    pub fn spawn(data: &Path, cores: usize, port: u16, extra: &[&str]) -> Broker {
        Broker::spawn_env(data, cores, port, extra, &[])
    }

    /// As [`Broker::spawn`], with extra environment variables.
    pub fn spawn_env(
        data: &Path,
        cores: usize,
        port: u16,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Broker {
        Broker::spawn_command(Broker::command(data, cores, port, extra, env), port)
    }

    /// The `sluice serve` command [`Broker::spawn_env`] runs.
    pub fn command(
        data: &Path,
        cores: usize,
        port: u16,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--cores", &cores.to_string(), "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data)
            .args(extra)
            // TEST_SLUICE_LOG=debug (or a filter) shows more of a failing
            // test's brokers.
            .env(
                "SLUICE_LOG",
                std::env::var("TEST_SLUICE_LOG").unwrap_or("info".into()),
            )
            // Brokers of tests run side by side: each shard sets up 128 MiB
            // rather than its share of the machine. A test may set more.
            .env("SLUICE_SHARD_MEMORY_BYTES", (128u64 << 20).to_string())
            // Each its own admin port (the log names it), not 9644.
            .env("SLUICE_ADMIN_LISTEN", "127.0.0.1:0")
            .envs(env.iter().copied());
        cmd
    }

    /// Runs a broker command, its output lines on a channel.
    pub fn spawn_command(mut cmd: Command, port: u16) -> Broker {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            BufReader::new(out)
                .lines()
                .for_each(|l| drop(tx.send(l.unwrap_or_default())))
        });
        std::thread::spawn(move || {
            BufReader::new(err)
                .lines()
                .for_each(|l| drop(tx2.send(l.unwrap_or_default())))
        });
        Broker {
            child,
            port,
            lines: rx,
            seen: Vec::new(),
        }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sends a signal to the child this test spawned.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// SIGTERM, and wait for a clean stop.
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        assert!(self.wait_for("stopped cleanly"), "{:#?}", self.seen);
        assert!(self.child.wait().unwrap().success());
    }

    /// kill -9: no clean shutdown at all.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Reads lines until one contains `needle` (or 60 s pass).
    pub fn wait_for(&mut self, needle: &str) -> bool {
        if self.seen.iter().any(|l| l.contains(needle)) {
            return true;
        }
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(60)) {
            self.seen.push(line.clone());
            if line.contains(needle) {
                return true;
            }
        }
        false
    }

    /// Reads lines until every needle has appeared. Stdout and stderr
    /// arrive on separate threads, so their order is not fixed: wait for
    /// each line needed, not for one that comes "last".
    pub fn wait_for_all(&mut self, needles: &[&str]) -> bool {
        needles.iter().all(|n| self.wait_for(n))
    }

    /// Every line read so far, plus whatever arrives within `d`.
    pub fn drain(&mut self, d: Duration) -> String {
        while let Ok(line) = self.lines.recv_timeout(d) {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.drain(Duration::from_millis(200));
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- broker log (last lines) ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
