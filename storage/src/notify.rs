//! A wake-everyone notification for the tasks of one shard.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Wakes every task waiting for a change (new data in a partition, a
/// group commit done).
/// Waiters that give up deregister, so an idle partition polled for hours
/// holds no stale wakers.
#[derive(Default)]
pub struct Notify {
    generation: Cell<u64>,
    next_key: Cell<u64>,
    waiters: RefCell<BTreeMap<u64, Waker>>,
}

impl Notify {
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }
    pub fn notify_all(&self) {
        self.generation.set(self.generation.get() + 1);
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for (_, w) in waiters {
            w.wake();
        }
    }
    /// Resolves once the generation differs from `seen`.
    pub fn changed(self: &Rc<Self>, seen: u64) -> Changed {
        Changed {
            notify: self.clone(),
            seen,
            key: None,
        }
    }
}

pub struct Changed {
    notify: Rc<Notify>,
    seen: u64,
    key: Option<u64>,
}

impl Future for Changed {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.seen {
            return Poll::Ready(());
        }
        let key = match self.key {
            Some(k) => k,
            None => {
                let k = self.notify.next_key.get();
                self.notify.next_key.set(k + 1);
                self.key = Some(k);
                k
            }
        };
        self.notify
            .waiters
            .borrow_mut()
            .insert(key, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Changed {
    fn drop(&mut self) {
        if let Some(k) = self.key {
            self.notify.waiters.borrow_mut().remove(&k);
        }
    }
}
