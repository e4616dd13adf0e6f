//! `sluice serve` as a user runs it: recovers a data directory written by
//! the storage engine, reports it, and stops cleanly on SIGTERM; refuses to
//! start with a clear message when the host cannot run it.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use glommio::Placement;
use sluice_storage::batch::build;
use sluice_storage::{LogConfig, PartitionLog, ShardCache, SystemClock};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sluice-serve-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

/// Writes `batches` batches of 3 records into `<dir>/<name>` and leaves the
/// last few bytes of the active segment torn, as a crash would.
fn write_partition(dir: &Path, batches: usize) {
    let dir = dir.to_path_buf();
    let ex = sluice_storage::runtime::executor_builder(Placement::Unbound, 256 * 1024)
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

fn spawn_serve(data: &Path) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .args(["serve", "--cores", "1", "--data-dir"])
        .arg(data)
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
            .for_each(|l| drop(tx.send(l.unwrap())))
    });
    std::thread::spawn(move || {
        BufReader::new(err)
            .lines()
            .for_each(|l| drop(tx2.send(l.unwrap())))
    });
    (child, rx)
}

fn wait_for(rx: &mpsc::Receiver<String>, needle: &str, seen: &mut Vec<String>) -> bool {
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        seen.push(line.clone());
        if line.contains(needle) {
            return true;
        }
    }
    false
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

    let (mut child, rx) = spawn_serve(data.path());
    let mut seen = Vec::new();
    assert!(
        wait_for(&rx, "sluice: serving 2 partition(s)", &mut seen),
        "{seen:#?}"
    );
    let all = seen.join("\n");
    assert!(
        all.contains("log_end=27"),
        "torn batch cut: 9 whole batches of 3 remain\n{all}"
    );
    assert!(all.contains("log_end=12"), "{all}");
    assert!(
        all.contains("cutting 288 bytes of torn or corrupt tail"),
        "{all}"
    );
    // SAFETY: sends SIGTERM to the child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(wait_for(&rx, "stopped cleanly", &mut seen), "{seen:#?}");
    assert!(child.wait().unwrap().success());

    // A clean restart finds the cut tail gone and nothing to repair.
    let (mut child, rx) = spawn_serve(data.path());
    let mut seen = Vec::new();
    assert!(
        wait_for(&rx, "bytes of torn tail cut", &mut seen),
        "{seen:#?}"
    );
    assert!(
        seen.last().unwrap().contains(" 0 bytes of torn tail cut"),
        "{seen:#?}"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert!(child.wait().unwrap().success());
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
}
