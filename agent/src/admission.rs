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

struct Waiter {
    /// Told apart from the others by this, to be taken out of the queue
    /// when its wait ends first.
    id: u64,
    deadline: Option<Instant>,
    grant: Grant,
}

/// How a waiter is told.
enum Grant {
    /// A task waiting in `admit`: sent the turn, or dropped when its
    /// deadline can no longer be met.
    Task(oneshot::Sender<()>),
    /// A caller that cannot wait (a store thread's connection), queued by
    /// `try_admit_or_queue`: called once, under the admission's lock, with
    /// its turn or `Expired`; `false` when it is gone (the turn passes on).
    Call(Box<dyn FnOnce(Turn) -> bool + Send>),
}

/// What a queued caller is told (`Grant::Call`).
#[derive(Debug)]
pub enum Turn {
    Granted(Ticket),
    /// Its deadline can no longer be met: `DeadlineExceeded` (counted).
    Expired,
}

/// What a caller that cannot wait gets now (`try_admit_or_queue`).
#[derive(Debug)]
pub enum Now {
    Granted(Ticket),
    Refused(Refusal),
    /// Queued: told by its call; `Admission::withdraw` with this id when
    /// its deadline passes first.
    Queued(u64),
}

#[derive(Default)]
struct State {
    running: usize,
    waiting: VecDeque<Waiter>,
    /// The next waiter's id.
    next_id: u64,
}

impl State {
    /// Puts a waiter at the back of the queue; its id.
    fn queue(&mut self, deadline: Option<Instant>, grant: Grant) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.waiting.push_back(Waiter { id, deadline, grant });
        id
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("running", &self.running)
            .field("waiting", &self.waiting.len())
            .field("next_id", &self.next_id)
            .finish()
    }
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

/// A task's place in the queue (`admit`) until it is told its turn.
struct Waiting<'a> {
    admission: &'a Admission,
    id: u64,
    granted: oneshot::Receiver<()>,
    told: bool,
}

impl Drop for Waiting<'_> {
    /// Its wait ended before it was told (a deadline, a client that left):
    /// out of the queue if it is still there; else the releaser took it,
    /// under the lock, and a turn sent is handed on at once.
    fn drop(&mut self) {
        if !self.told && !self.admission.withdraw(self.id) && self.granted.try_recv().is_ok() {
            self.admission.release();
        }
    }
}

/// A turn on the device taken without waiting (`Admission::try_admit_or_queue`),
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
            (s.queue(deadline, Grant::Task(grant)), granted)
        };
        let (id, granted) = granted;
        // Also when this future is dropped while it waits (its client
        // left): the place in the queue, or the turn given meanwhile, goes.
        let mut wait = Waiting { admission: self, id, granted, told: false };
        let outcome = match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), &mut wait.granted).await.ok(),
            None => Some((&mut wait.granted).await),
        };
        wait.told = outcome.is_some();
        drop(wait);
        match outcome {
            Some(Ok(())) => Ok(Permit { admission: self, started: Instant::now() }),
            // Dropped by `release` as expired; or timed out here.
            Some(Err(_)) | None => Err(self.refuse(Refusal::DeadlineExceeded)),
        }
    }

    /// A turn on the device now, a refusal now, or a place in the queue,
    /// for a caller that cannot wait for it (a store thread's connection):
    /// `Overloaded` when the queue is full, `DeadlineExceeded` when the
    /// request could not finish by `deadline` (in that order, as `api`
    /// refuses), a turn if one is free with nobody waiting for it, else a
    /// place in the queue, served as `admit`'s are, where the call `call`
    /// makes (only then) is told its turn (or that its deadline can no
    /// longer be met). The caller withdraws it when its deadline passes
    /// first (`withdraw`).
    pub fn try_admit_or_queue<C>(&self, deadline: Option<Instant>, call: impl FnOnce() -> C) -> Now
    where
        C: FnOnce(Turn) -> bool + Send + 'static,
    {
        let mut s = self.state.lock().expect("admission lock");
        if s.running >= self.limits.concurrency && s.waiting.len() >= self.limits.queue_max {
            return Now::Refused(self.refuse(Refusal::Overloaded));
        }
        if !self.can_finish_by(deadline, Instant::now()) {
            return Now::Refused(self.refuse(Refusal::DeadlineExceeded));
        }
        if s.running < self.limits.concurrency && s.waiting.is_empty() {
            s.running += 1;
            return Now::Granted(Ticket { started: Instant::now() });
        }
        Now::Queued(s.queue(deadline, Grant::Call(Box::new(call()))))
    }

    /// Takes waiter `id` out of the queue (its deadline passed, or it is
    /// gone); `false` when it is no longer there: it was told (its call
    /// made, its channel sent to or dropped). A caller withdrawn at its
    /// deadline counts its refusal itself.
    pub fn withdraw(&self, id: u64) -> bool {
        let mut s = self.state.lock().expect("admission lock");
        let Some(at) = s.waiting.iter().position(|w| w.id == id) else {
            return false;
        };
        s.waiting.remove(at);
        true
    }

    /// Gives back a turn that was not used (its caller left before it
    /// could): the next waiter gets it, and the service time is not
    /// touched.
    #[allow(clippy::needless_pass_by_value)] // taken, so that a turn is given back once
    pub fn pass(&self, _ticket: Ticket) {
        self.release();
    }

    /// Gives back a turn taken by `try_admit_or_queue`.
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
            let expired = !self.can_finish_by(w.deadline, now);
            let taken = match w.grant {
                // Dropped: it answers `DeadlineExceeded`.
                Grant::Task(_) if expired => false,
                Grant::Task(grant) => grant.send(()).is_ok(),
                Grant::Call(call) if expired => {
                    self.refuse(Refusal::DeadlineExceeded);
                    call(Turn::Expired);
                    false
                }
                Grant::Call(call) => call(Turn::Granted(Ticket { started: now })),
            };
            if taken {
                // The turn passes on: `running` is unchanged.
                return;
            }
            // Expired, or its request gave up (timed out or the client
            // left).
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

    /// A request whose wait is dropped (its client left) keeps neither its
    /// place in the queue nor a turn sent to it before it looked.
    #[tokio::test]
    async fn a_waiter_dropped_while_it_waits_keeps_neither_its_place_nor_a_turn() {
        let a = admission(1, 10, 1);
        let held = a.admit(None).await.unwrap();
        let mut waiter = Box::pin(a.admit(None));
        assert!(tokio::time::timeout(Duration::from_millis(5), &mut waiter).await.is_err(), "it waits");
        assert_eq!(a.waiting(), 1);
        drop(waiter);
        assert_eq!(a.waiting(), 0, "its place in the queue was kept");
        let mut waiter = Box::pin(a.admit(None));
        assert!(tokio::time::timeout(Duration::from_millis(5), &mut waiter).await.is_err(), "it waits");
        // Its turn is sent; it is dropped before it looks.
        drop(held);
        assert_eq!(a.state.lock().unwrap().running, 1, "the turn passed to the waiter");
        drop(waiter);
        assert_eq!(a.state.lock().unwrap().running, 0, "the turn sent to it was kept");
    }

    /// A queued caller's call: what it was told, kept for the test.
    fn recorder() -> (Arc<Mutex<Vec<Turn>>>, impl FnOnce(Turn) -> bool + Send + 'static) {
        let told = Arc::new(Mutex::new(Vec::new()));
        let t = Arc::clone(&told);
        (told, move |turn| {
            t.lock().unwrap().push(turn);
            true
        })
    }

    /// What cannot wait is answered as `admit` would: a turn when one is
    /// free, `Overloaded` at the bound, `DeadlineExceeded` when it could not
    /// finish in time, and otherwise a place in the queue, whose call is
    /// told its turn in the queue's order.
    #[test]
    fn a_caller_that_cannot_wait_is_answered_now_or_called_with_its_turn() {
        let a = admission(1, 10, 2);
        let past = Instant::now().checked_sub(Duration::from_millis(1)).unwrap();
        // Made only for a caller that is queued.
        let never = || -> fn(Turn) -> bool { panic!("not queued") };
        assert!(matches!(a.try_admit_or_queue(Some(past), never), Now::Refused(Refusal::DeadlineExceeded)));
        let Now::Granted(first) = a.try_admit_or_queue(Some(Instant::now() + Duration::from_secs(5)), never) else {
            panic!("a free turn")
        };
        let (told1, call1) = recorder();
        let (told2, call2) = recorder();
        assert!(matches!(a.try_admit_or_queue(None, || call1), Now::Queued(_)));
        assert!(matches!(a.try_admit_or_queue(None, || call2), Now::Queued(_)));
        assert!(matches!(a.try_admit_or_queue(None, never), Now::Refused(Refusal::Overloaded)));
        assert_eq!(a.overloaded.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(a.deadline_exceeded.load(std::sync::atomic::Ordering::Relaxed), 1);
        // Each finished turn goes to the next in line, oldest first.
        a.done(first);
        let Some(Turn::Granted(second)) = told1.lock().unwrap().pop() else {
            panic!("the first in line was not called")
        };
        assert!(told2.lock().unwrap().is_empty());
        a.done(second);
        let Some(Turn::Granted(third)) = told2.lock().unwrap().pop() else {
            panic!("the second in line was not called")
        };
        a.done(third);
        assert_eq!(a.state.lock().unwrap().running, 0);
    }

    /// A queued caller whose deadline passes is told so when a turn comes
    /// (or withdraws first); one that is gone passes its turn on; a turn
    /// not used is passed on without counting as service.
    #[test]
    fn expired_withdrawn_and_gone_callers_never_keep_a_turn() {
        let a = admission(1, 10, 10);
        let Now::Granted(held) = a.try_admit_or_queue(None, || |_| true) else { panic!("a free turn") };
        let soon = Instant::now() + Duration::from_millis(5);
        let (expired, call) = recorder();
        assert!(matches!(a.try_admit_or_queue(Some(soon), || call), Now::Queued(_)));
        let (withdrawn, call) = recorder();
        let Now::Queued(id) = a.try_admit_or_queue(None, || call) else { panic!("queued") };
        assert!(matches!(a.try_admit_or_queue(None, || |_| false), Now::Queued(_)), "one that will be gone");
        let (last, call) = recorder();
        assert!(matches!(a.try_admit_or_queue(None, || call), Now::Queued(_)));
        assert!(a.withdraw(id));
        assert!(!a.withdraw(id), "withdrawn once");
        std::thread::sleep(Duration::from_millis(10));
        a.done(held);
        assert!(matches!(expired.lock().unwrap()[..], [Turn::Expired]));
        assert!(withdrawn.lock().unwrap().is_empty());
        let Some(Turn::Granted(ticket)) = last.lock().unwrap().pop() else { panic!("the turn was not passed on") };
        assert_eq!(a.deadline_exceeded.load(std::sync::atomic::Ordering::Relaxed), 1, "the expired one");
        let service = a.service_ns.load(std::sync::atomic::Ordering::Relaxed);
        a.pass(ticket);
        assert_eq!(a.service_ns.load(std::sync::atomic::Ordering::Relaxed), service);
        assert_eq!(a.state.lock().unwrap().running, 0);
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
