//! What each served connection carries besides hyper's own state: the timer
//! behind its header timeouts and the stop signal that lets it finish.
//! Both cost nothing per request while nothing is due (no timer-wheel entry
//! made and removed, no lock taken) — hyper's and hyper-util's own do both
//! on every request.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// hyper's timer for one connection. hyper asks it for a new sleep at the
/// start of every request head (the header timeout) and drops it once the
/// head is in; every sleep of the connection waits on one runtime timer,
/// which is moved only when it fires before the sleep it serves is due.
/// Header deadlines only move later, so that is at most once per header
/// timeout, not twice per request.
#[derive(Debug, Clone, Default)]
pub(crate) struct HeadTimer(Arc<Mutex<Option<Pin<Box<tokio::time::Sleep>>>>>);

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HeadSleep {
            deadline: deadline.into(),
            timer: self.clone(),
        })
    }

    /// The runtime's clock (paused in tests).
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// One of [`HeadTimer`]'s sleeps.
struct HeadSleep {
    deadline: tokio::time::Instant,
    timer: HeadTimer,
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.deadline;
        let mut shared = self.timer.0.lock().unwrap_or_else(PoisonError::into_inner);
        let timer = shared.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
        }
        // Woken when the shared timer fires: due then, or (set for an
        // earlier sleep) moved to this one's deadline and waited on again.
        while timer.as_mut().poll(cx).is_ready() {
            if tokio::time::Instant::now() >= deadline {
                return Poll::Ready(());
            }
            timer.as_mut().reset(deadline);
        }
        Poll::Pending
    }
}

impl hyper::rt::Sleep for HeadSleep {}

/// The stop of a server, as its connections see it: once stopped, each
/// finishes the request it is serving and closes.
#[derive(Debug, Default)]
pub(crate) struct Stopping {
    stopped: AtomicBool,
    /// The connections to wake when it stops, by number.
    waiting: Mutex<Waiting>,
}

#[derive(Debug, Default)]
struct Waiting {
    next: u64,
    wakers: HashMap<u64, Waker>,
}

impl Stopping {
    /// Stops: every connection waiting in [`Stopping::wait`] is woken.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let wakers = std::mem::take(
            &mut self
                .waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .wakers,
        );
        for waker in wakers.into_values() {
            waker.wake();
        }
    }

    /// Ready once stopped. It registers its waker once (again only when
    /// polled with another), so polling it beside a connection on every
    /// wake-up takes no lock.
    pub(crate) fn wait(self: &Arc<Self>) -> StopWait {
        StopWait {
            stopping: Arc::clone(self),
            registered: None,
        }
    }
}

/// See [`Stopping::wait`].
pub(crate) struct StopWait {
    stopping: Arc<Stopping>,
    /// Its number among the waiting, and the waker registered under it.
    registered: Option<(u64, Waker)>,
}

impl Future for StopWait {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.stopping.stopped.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        if self
            .registered
            .as_ref()
            .is_some_and(|(_, waker)| waker.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        let stopping = Arc::clone(&self.stopping);
        let mut waiting = stopping
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let id = match &self.registered {
            Some((id, _)) => *id,
            None => {
                waiting.next += 1;
                waiting.next
            }
        };
        waiting.wakers.insert(id, cx.waker().clone());
        self.registered = Some((id, cx.waker().clone()));
        drop(waiting);
        // A stop between the first load and the registration took the
        // wakers before this one was in.
        if stopping.stopped.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for StopWait {
    fn drop(&mut self) {
        if let Some((id, _)) = &self.registered {
            self.stopping
                .waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .wakers
                .remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer as _;

    /// Whether `future` is pending when polled once (and registered so).
    async fn pending<F: Future + Unpin>(future: &mut F) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *future).poll(cx).is_pending())).await
    }

    #[tokio::test(start_paused = true)]
    async fn each_head_sleep_is_due_at_its_own_deadline() {
        let timer = HeadTimer::default();
        let ten = Duration::from_secs(10);
        // A request's timeout, waited on and dropped once its head is in.
        let mut first = timer.sleep(ten);
        assert!(pending(&mut first).await);
        tokio::time::advance(Duration::from_secs(4)).await;
        drop(first);
        // The next is due 10 s after it started, not at the first's deadline.
        let started = tokio::time::Instant::now();
        timer.sleep(ten).await;
        assert_eq!(started.elapsed(), ten);
        // A deadline sooner than the shared timer's is kept too.
        let mut later = timer.sleep(Duration::from_secs(30));
        assert!(pending(&mut later).await);
        let started = tokio::time::Instant::now();
        timer.sleep(Duration::from_secs(1)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn every_waiting_connection_is_woken_once_stopped() {
        let stopping = Arc::new(Stopping::default());
        let waiters: Vec<_> = (0..3).map(|_| tokio::spawn(stopping.wait())).collect();
        // One that ends before the stop leaves no waker behind.
        let mut gone = stopping.wait();
        assert!(pending(&mut gone).await);
        drop(gone);
        tokio::task::yield_now().await;
        assert_eq!(stopping.waiting.lock().unwrap().wakers.len(), 3);
        stopping.stop();
        for waiter in waiters {
            waiter.await.expect("woken");
        }
        assert!(stopping.waiting.lock().unwrap().wakers.is_empty());
        // Once stopped, a new wait is ready at once.
        stopping.wait().await;
    }
}
