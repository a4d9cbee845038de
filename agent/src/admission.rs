//! Admission control per device, so overload degrades into refusals
//! instead of collapse.
//!
//! At most `concurrency` requests run on a device at once; others wait in a
//! bounded queue. While the queue is short it is served oldest first; past
//! `lifo_after` waiting requests it is served newest first, because under
//! sustained overload the oldest waiters are the ones whose clients are
//! about to give up, and serving them first makes every request late.
//! Past `queue_max` waiting requests a new one is refused at once
//! (`Overloaded`, with `Retry-After`). A request whose deadline
//! (`x-deadline-ms`) will have passed before it could finish (now plus the
//! device's recent service time, a moving average) is dropped without
//! doing any I/O (`DeadlineExceeded`): the device's time goes to requests
//! that can still make theirs.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::oneshot;

/// The thresholds, from `[limits]` in the config.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub concurrency: usize,
    pub lifo_after: usize,
    pub queue_max: usize,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Overloaded,
    DeadlineExceeded,
}

#[derive(Debug)]
struct Waiter {
    deadline: Option<Instant>,
    grant: oneshot::Sender<()>,
}

#[derive(Debug, Default)]
struct State {
    running: usize,
    waiting: VecDeque<Waiter>,
}

#[derive(Debug)]
pub struct Admission {
    limits: Thresholds,
    state: Mutex<State>,
    /// Refusals so far, by reason, for metrics.
    pub overloaded: std::sync::atomic::AtomicU64,
    pub deadline_exceeded: std::sync::atomic::AtomicU64,
    /// Moving average of how long an admitted request runs, in ns.
    service_ns: std::sync::atomic::AtomicU64,
}

/// The right to run one request on the device; returned when dropped.
#[derive(Debug)]
pub struct Permit<'a> {
    admission: &'a Admission,
    started: Instant,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.admission.finish(self.started);
    }
}

/// A turn on the device taken without waiting (`Admission::try_admit`),
/// for a caller that cannot hold a `Permit` (a store thread's connection);
/// given back with `Admission::done`.
#[derive(Debug)]
#[must_use = "a turn not given back keeps a place on the device for ever"]
pub struct Ticket {
    started: Instant,
}

impl Admission {
    pub fn new(limits: Thresholds) -> Admission {
        Admission {
            limits,
            state: Mutex::default(),
            overloaded: 0.into(),
            deadline_exceeded: 0.into(),
            service_ns: 0.into(),
        }
    }

    /// Whether a request arriving now would be refused as `Overloaded`.
    pub fn is_full(&self) -> bool {
        let s = self.state.lock().expect("admission lock");
        s.running >= self.limits.concurrency && s.waiting.len() >= self.limits.queue_max
    }

    /// Whether a request would run at once with nobody waiting: the room
    /// foreground requests leave, which background work may use.
    pub fn has_room(&self) -> bool {
        let s = self.state.lock().expect("admission lock");
        s.running < self.limits.concurrency && s.waiting.is_empty()
    }

    /// Requests waiting now.
    pub fn waiting(&self) -> usize {
        self.state.lock().expect("admission lock").waiting.len()
    }

    /// Waits for a turn on the device, or says why there is none.
    pub async fn admit(&self, deadline: Option<Instant>) -> Result<Permit<'_>, Refusal> {
        let granted = {
            let mut s = self.state.lock().expect("admission lock");
            if !self.can_finish_by(deadline, Instant::now()) {
                return Err(self.refuse(Refusal::DeadlineExceeded));
            }
            if s.running < self.limits.concurrency {
                s.running += 1;
                return Ok(Permit { admission: self, started: Instant::now() });
            }
            if s.waiting.len() >= self.limits.queue_max {
                return Err(self.refuse(Refusal::Overloaded));
            }
            let (grant, granted) = oneshot::channel();
            s.waiting.push_back(Waiter { deadline, grant });
            granted
        };
        let mut granted = granted;
        let outcome = match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), &mut granted).await.ok(),
            None => Some((&mut granted).await),
        };
        match outcome {
            Some(Ok(())) => Ok(Permit { admission: self, started: Instant::now() }),
            // Dropped by `release` as expired.
            Some(Err(_)) => Err(self.refuse(Refusal::DeadlineExceeded)),
            // Timed out here. Closing first makes any later grant fail (the
            // releaser moves on); a grant that came before the close is a
            // turn we own and hand on at once.
            None => {
                granted.close();
                if granted.try_recv().is_ok() {
                    self.release();
                }
                Err(self.refuse(Refusal::DeadlineExceeded))
            }
        }
    }

    /// A turn on the device now, if one is free with nobody waiting for
    /// it (a request without a deadline); `None`: the caller takes the
    /// path that waits (`admit`).
    pub fn try_admit(&self) -> Option<Ticket> {
        let mut s = self.state.lock().expect("admission lock");
        if s.running < self.limits.concurrency && s.waiting.is_empty() {
            s.running += 1;
            return Some(Ticket { started: Instant::now() });
        }
        None
    }

    /// Gives back a turn taken by `try_admit`.
    #[allow(clippy::needless_pass_by_value)] // taken, so that a turn is given back once
    pub fn done(&self, ticket: Ticket) {
        self.finish(ticket.started);
    }

    /// A request that started at `started` finished: its time goes into
    /// the service average, its turn to the next waiter.
    fn finish(&self, started: Instant) {
        let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let avg = &self.service_ns;
        let old = avg.load(std::sync::atomic::Ordering::Relaxed);
        // 1/8 weight to the newest: follows a change within a few dozen
        // requests without jumping on one outlier.
        let new = if old == 0 { took } else { old - old / 8 + took / 8 };
        avg.store(new, std::sync::atomic::Ordering::Relaxed);
        self.release();
    }

    /// Whether a request starting at `now` would finish before `deadline`,
    /// judging by the device's recent service time.
    fn can_finish_by(&self, deadline: Option<Instant>, now: Instant) -> bool {
        let service = std::time::Duration::from_nanos(self.service_ns.load(std::sync::atomic::Ordering::Relaxed));
        deadline.is_none_or(|d| now + service < d)
    }

    fn refuse(&self, why: Refusal) -> Refusal {
        let counter = match why {
            Refusal::Overloaded => &self.overloaded,
            Refusal::DeadlineExceeded => &self.deadline_exceeded,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        why
    }

    /// Hands the finished request's turn to a waiter: the newest when the
    /// queue is past `lifo_after`, else the oldest; expired waiters are
    /// dropped on the way (they answer `DeadlineExceeded`).
    fn release(&self) {
        let mut s = self.state.lock().expect("admission lock");
        let now = Instant::now();
        loop {
            let lifo = s.waiting.len() > self.limits.lifo_after;
            let next = if lifo { s.waiting.pop_back() } else { s.waiting.pop_front() };
            let Some(w) = next else {
                s.running -= 1;
                return;
            };
            if !self.can_finish_by(w.deadline, now) {
                continue;
            }
            if w.grant.send(()).is_ok() {
                // The turn passes on: `running` is unchanged.
                return;
            }
            // Its request gave up (timed out or the client left).
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn admission(concurrency: usize, lifo_after: usize, queue_max: usize) -> Arc<Admission> {
        Arc::new(Admission::new(Thresholds { concurrency, lifo_after, queue_max }))
    }

    #[tokio::test]
    async fn background_work_has_room_only_when_no_foreground_request_waits() {
        let a = admission(2, 10, 10);
        assert!(a.has_room(), "idle");
        let one = a.admit(None).await.unwrap();
        assert!(a.has_room(), "one of two running");
        let two = a.admit(None).await.unwrap();
        assert!(!a.has_room(), "all running");
        let a2 = Arc::clone(&a);
        let waiter = tokio::spawn(async move { a2.admit(None).await.map(drop) });
        while a.waiting() < 1 {
            tokio::task::yield_now().await;
        }
        drop(one);
        // The waiter took the freed turn: still no room.
        waiter.await.unwrap().unwrap();
        drop(two);
        assert!(a.has_room());
    }

    #[tokio::test]
    async fn the_bound_refuses_and_an_expired_deadline_does_no_work() {
        let a = admission(1, 10, 2);
        let held = a.admit(None).await.unwrap();
        let past = Instant::now().checked_sub(Duration::from_millis(1)).unwrap();
        assert_eq!(a.admit(Some(past)).await.unwrap_err(), Refusal::DeadlineExceeded);
        // Two may wait; the third is refused at once.
        let (a1, a2) = (Arc::clone(&a), Arc::clone(&a));
        let w1 = tokio::spawn(async move { a1.admit(None).await.map(drop) });
        let w2 = tokio::spawn(async move { a2.admit(None).await.map(drop) });
        while a.waiting() < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(a.admit(None).await.unwrap_err(), Refusal::Overloaded);
        drop(held);
        w1.await.unwrap().unwrap();
        w2.await.unwrap().unwrap();
        assert_eq!(a.state.lock().unwrap().running, 0);
    }

    #[tokio::test]
    async fn a_waiter_whose_deadline_passes_gives_up_and_its_turn_is_not_lost() {
        let a = admission(1, 10, 10);
        let held = a.admit(None).await.unwrap();
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(a.admit(Some(soon)).await.unwrap_err(), Refusal::DeadlineExceeded);
        drop(held);
        assert_eq!(a.state.lock().unwrap().running, 0, "the expired waiter took no turn");
        drop(a.admit(None).await.unwrap());
    }

    #[tokio::test]
    async fn a_deadline_shorter_than_the_service_time_is_refused_at_once() {
        let a = admission(4, 10, 10);
        let p = a.admit(None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        drop(p);
        let started = Instant::now();
        let refusal = a.admit(Some(Instant::now() + Duration::from_millis(10))).await.unwrap_err();
        assert_eq!(refusal, Refusal::DeadlineExceeded);
        assert!(started.elapsed() < Duration::from_millis(10), "refused without waiting");
        drop(a.admit(Some(Instant::now() + Duration::from_millis(200))).await.unwrap());
    }

    #[tokio::test]
    async fn past_the_threshold_the_newest_waiter_goes_first() {
        let a = admission(1, 1, 10);
        let held = a.admit(None).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..3 {
            let (a2, order) = (Arc::clone(&a), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                let p = a2.admit(None).await.unwrap();
                order.lock().unwrap().push(i);
                drop(p);
            }));
            while a.waiting() < i + 1 {
                tokio::task::yield_now().await;
            }
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        // Three waiting (past lifo_after = 1): the newest first; then two
        // waiting, still past it: the newer; then the last.
        assert_eq!(*order.lock().unwrap(), [2, 1, 0]);
    }
}
