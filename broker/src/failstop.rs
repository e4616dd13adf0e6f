//! Fail-stop: a panic anywhere in a serving broker stops the whole process
//! with a clear message and exit status [`PANIC_EXIT_STATUS`], so a
//! supervisor (systemd, Kubernetes) restarts it and recovery runs. A
//! panicking shard thread would otherwise be gone while the others serve
//! on: its partitions unreachable, its forwarded requests unanswered, a
//! broker half alive.
//!
//! The one panic that is not a bug is a codec's on untrusted bytes, which
//! `sluice_net::request::decode_request` catches and answers as a
//! malformed request; the hook lets that one unwind to its catch.

use std::io::Write;

/// Exit status of a broker stopped by a panic (EX_SOFTWARE).
pub const PANIC_EXIT_STATUS: i32 = 70;

/// Installs the fail-stop panic hook for the rest of the process's life.
pub fn install() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if sluice_net::guard::is_decoding_untrusted() {
            // Caught by the decoder and answered; not a broker bug.
            return;
        }
        default(info);
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        tracing::error!(
            thread = name,
            "a panic on thread {name}: {info}; the broker stops (fail-stop) so that no shard \
             is left half alive, exit status {PANIC_EXIT_STATUS}; acknowledged data is on disk \
             and the next start recovers it"
        );
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        // SAFETY: ends the process at once; no other thread runs after it,
        // so none can serve on without the panicked one.
        unsafe { libc::_exit(PANIC_EXIT_STATUS) };
    }));
}

/// Test-only fault: in debug builds, a produce to the topic named by
/// `SLUICE_FAULT_PANIC_TOPIC` panics on the partition's owner shard, so
/// tests can show what a bug in a shard does to the process. Release
/// builds have no such hook.
pub fn panic_on_produce(topic: &str) {
    #[cfg(debug_assertions)]
    {
        thread_local! {
            static TOPIC: Option<String> = std::env::var("SLUICE_FAULT_PANIC_TOPIC").ok();
        }
        if TOPIC.with(|t| t.as_deref() == Some(topic)) {
            panic!("injected fault: produce to {topic}");
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = topic;
}

/// Test-only fault: in debug builds, a produce to the topic named by
/// `SLUICE_FAULT_STALL_TOPIC` spins 50 ms without yielding, so tests can
/// show the stall detector's report. Release builds have no such hook.
pub fn stall_on_produce(topic: &str) {
    #[cfg(debug_assertions)]
    {
        thread_local! {
            static TOPIC: Option<String> = std::env::var("SLUICE_FAULT_STALL_TOPIC").ok();
        }
        if TOPIC.with(|t| t.as_deref() == Some(topic)) {
            let until = std::time::Instant::now() + std::time::Duration::from_millis(50);
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = topic;
}

/// Test-only fault: in debug builds, a produce to the topic named by
/// `SLUICE_FAULT_SLOW_TOPIC` waits 5 s (yielding) on the partition's owner
/// shard before it appends, so tests can show that one slow job does not
/// hold up others. Release builds have no such hook.
pub async fn slow_produce(topic: &str) {
    #[cfg(debug_assertions)]
    {
        thread_local! {
            static TOPIC: Option<String> = std::env::var("SLUICE_FAULT_SLOW_TOPIC").ok();
        }
        if TOPIC.with(|t| t.as_deref() == Some(topic)) {
            glommio::timer::sleep(std::time::Duration::from_secs(5)).await;
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = topic;
}
