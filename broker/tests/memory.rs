//! A shard's memory is set up before it serves: the serving line says how
//! much each shard holds, and producing into a fresh broker (its cache
//! filling, every batch kept) faults in almost no pages, where taking
//! fresh memory from the kernel costs a fault per page written.

mod common;

use std::process::Command;

use common::{tempdir, Broker, BIN};

/// Minor page faults of a process so far (`/proc/PID/stat`, field 10).
fn minor_faults(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which may hold spaces, start with
    // the state (field 3).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split_whitespace().nth(7).unwrap().parse().unwrap()
}

#[test]
fn producing_into_a_fresh_broker_takes_no_fresh_pages() {
    const HEAP: usize = 512 << 20;
    const MESSAGES: u64 = 64_000;
    const MESSAGE_BYTES: u64 = 1000;
    let dir = tempdir();
    let heap = HEAP.to_string();
    let mut b = Broker::start(
        &dir.path().join("data"),
        1,
        &["--shard-memory-bytes", &heap],
    );
    let serving = b
        .seen
        .iter()
        .find(|l| l.contains("sluice: serving"))
        .cloned()
        .unwrap();
    assert!(
        serving.contains(&format!("per shard {} MiB of memory set up in", HEAP >> 20)),
        "{serving}"
    );
    assert!(
        serving.contains(&format!("a {} MiB cache", (HEAP / 100 * 75) >> 20)),
        "{serving}"
    );
    let pid = b.child.id();
    let before = minor_faults(pid);
    let out = Command::new(BIN)
        .args(["loadgen", "--bootstrap", &b.bootstrap(), "--topic", "fresh"])
        .args(["--partitions", "1", "--producers", "1", "--consumers", "0"])
        .args(["--message-bytes", &MESSAGE_BYTES.to_string()])
        .args(["--batch-bytes", "1048576", "--acks", "1"])
        .args(["--messages", &MESSAGES.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let faults = minor_faults(pid) - before;
    // Every byte produced is still cached (64 MB under a 384 MiB budget):
    // from fresh memory that is at least one fault per 4 KiB page, 15 625
    // here. What remains is the odd small allocation and the kernel's own.
    let fresh_pages = MESSAGES * MESSAGE_BYTES / 4096;
    assert!(
        faults < fresh_pages / 8,
        "{faults} page faults while producing {} bytes (fresh memory: {fresh_pages})",
        MESSAGES * MESSAGE_BYTES
    );
    b.stop();
    assert!(b.wait_for("shard stopped"), "{:#?}", b.seen);
    let heap_line = b.seen.iter().find(|l| l.contains("shard stopped")).unwrap();
    assert!(heap_line.contains("heap_overflow=0"), "{heap_line}");
}
