//! The stall detector: a task that runs longer than a threshold without
//! yielding holds up every other task of its shard (as Seastar's reactor
//! reports, a shard that does not yield serves nobody). Tasks spawned
//! through [`watch`] time each poll; one past the threshold is logged
//! with the task's kind and what it was doing (a request handler names
//! its API through [`doing`]), and counted.
//!
//! The cost is two clock reads per poll. The detector sees only watched
//! tasks; a stall inside the runtime itself goes unseen.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Names a label and its detail code in a stall report.
pub type Describe = fn(&'static str, i32) -> String;

thread_local! {
    static THRESHOLD: Cell<Option<Duration>> = const { Cell::new(None) };
    static STALLS: Cell<u64> = const { Cell::new(0) };
    static LAST_LOG: Cell<Option<Instant>> = const { Cell::new(None) };
    /// What the running poll is doing: a label and a detail code (an API
    /// key), -1 for none.
    static DOING: Cell<(&'static str, i32)> = const { Cell::new(("", -1)) };
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    static DESCRIBE: Cell<Option<Describe>> = const { Cell::new(None) };
}

/// Turns the detector on for this thread (`None` or zero turns it off),
/// with a function that names a label and its detail code.
pub fn configure(threshold: Option<Duration>, describe: Option<Describe>) {
    THRESHOLD.set(threshold.filter(|t| !t.is_zero()));
    DESCRIBE.set(describe);
}

/// Stalls seen on this thread.
pub fn count() -> u64 {
    STALLS.get()
}

/// Labels the work of the running poll, for a stall report.
pub fn doing(label: &'static str, detail: i32) {
    DOING.set((label, detail));
}

/// A future whose polls are timed (see the module's comment).
pub struct Watched<F> {
    kind: &'static str,
    inner: F,
}

/// Wraps `f` so a poll of it longer than the threshold is reported as a
/// stall of a task of this kind.
pub fn watch<F: Future>(kind: &'static str, f: F) -> Watched<F> {
    Watched { kind, inner: f }
}

impl<F: Future> Future for Watched<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `inner` is never moved out of the pinned wrapper.
        let this = unsafe { self.get_unchecked_mut() };
        let inner = unsafe { Pin::new_unchecked(&mut this.inner) };
        let Some(threshold) = THRESHOLD.get() else {
            return inner.poll(cx);
        };
        // Only the outermost watched future of a poll reports.
        let depth = DEPTH.get();
        DEPTH.set(depth + 1);
        if depth == 0 {
            DOING.set(("", -1));
        }
        let start = Instant::now();
        let out = inner.poll(cx);
        let ran = start.elapsed();
        DEPTH.set(depth);
        if depth == 0 && ran >= threshold {
            report(this.kind, ran, threshold);
        }
        out
    }
}

fn report(kind: &'static str, ran: Duration, threshold: Duration) {
    let n = STALLS.get() + 1;
    STALLS.set(n);
    // Every stall is counted; the log gets at most one line a second past
    // the first few, so a shard that stalls all the time stays readable.
    let now = Instant::now();
    let quiet = LAST_LOG
        .get()
        .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1));
    if n > 8 && quiet {
        return;
    }
    LAST_LOG.set(Some(now));
    let (label, detail) = DOING.get();
    let doing = match (DESCRIBE.get(), label) {
        (_, "") => String::new(),
        (Some(f), l) => f(l, detail),
        (None, l) => l.to_string(),
    };
    tracing::warn!(
        task = kind,
        doing = %doing,
        ran_us = ran.as_micros() as u64,
        threshold_us = threshold.as_micros() as u64,
        stalls = n,
        "stall: a {kind} task ran {ran:?} without yielding"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_poll_is_counted_and_a_short_one_is_not() {
        configure(Some(Duration::from_millis(5)), None);
        let before = count();
        futures_lite::future::block_on(watch("test", async {
            doing("busy", 1);
            std::thread::sleep(Duration::from_millis(8));
        }));
        assert_eq!(count(), before + 1);
        futures_lite::future::block_on(watch("test", async {}));
        assert_eq!(count(), before + 1);
        // Nested watched futures report once, from the outermost.
        futures_lite::future::block_on(watch(
            "outer",
            watch("inner", async {
                std::thread::sleep(Duration::from_millis(8))
            }),
        ));
        assert_eq!(count(), before + 2);
        configure(None, None);
        futures_lite::future::block_on(watch("test", async {
            std::thread::sleep(Duration::from_millis(8));
        }));
        assert_eq!(count(), before + 2, "off means off");
    }
}
