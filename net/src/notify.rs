//! A single-waiter wake-up flag for tasks on one shard.
//!
//! Deliveries from any task of the shard set the flag; the connection's writer task waits on it.
//! It allocates nothing and needs no lock because everything on a shard runs on one thread.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Wakes one waiting task; a notification with nobody waiting is remembered.
#[derive(Default)]
pub(crate) struct Notify {
    pending: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Notify {
    /// Marks work pending and wakes the waiter, if any.
    pub(crate) fn notify(&self) {
        self.pending.set(true);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Completes when a notification is pending, consuming it.
    pub(crate) fn notified(&self) -> Notified<'_> {
        Notified { notify: self }
    }
}

/// Future returned by [`Notify::notified`].
pub(crate) struct Notified<'a> {
    notify: &'a Notify,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if self.notify.pending.replace(false) {
            return Poll::Ready(());
        }
        let waker = match self.notify.waker.take() {
            Some(existing) if existing.will_wake(context.waker()) => existing,
            _ => context.waker().clone(),
        };
        self.notify.waker.set(Some(waker));
        Poll::Pending
    }
}
