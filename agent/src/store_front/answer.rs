//! What a store thread's front answers, and how: a plain read from the
//! read cache, its own store, where the holder placed it, or the holder's
//! thread; anything else by the router's handler on tokio.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardstore::store::thread::Local;
use shardstore::store::{Read, ShardStat};

use super::request::{shard_head, Plain};
use super::{ConnId, Message, Pending, Source, ThreadFront, BODY_COPIED_BYTES_MAX};
use crate::admission::{Now, Refusal, Ticket, Turn};
use crate::front;
use crate::node::Route;

impl ThreadFront {
    /// A plain `GET` or `HEAD` of a shard: answered here when it can be
    /// (see the module's notes), else by the handler.
    pub(super) fn fast(&mut self, local: &mut Local<'_, '_>, id: ConnId, plain: Plain) {
        self.read_plain(local, id, plain, Instant::now(), &mut None);
    }

    /// The turn on `slot`'s device a read queued by `read_plain` waited
    /// for, or the news that its deadline can no longer be met.
    pub(super) fn admitted(&mut self, local: &mut Local<'_, '_>, id: ConnId, slot: usize, turn: Turn) {
        let shared = Arc::clone(&self.shared);
        if !self.queued.is_empty() {
            self.queued.retain(|&(_, c)| c != id);
        }
        let (queued, closing) = match self.conn(id) {
            Some(c) if matches!(c.pending, Pending::Queued { .. }) => {
                (Some(std::mem::replace(&mut c.pending, Pending::None)), c.closing)
            }
            _ => (None, false),
        };
        match (queued, turn) {
            (Some(Pending::Queued { plain, started, .. }), Turn::Granted(ticket)) if !closing => {
                let mut granted = Some((slot, ticket));
                self.read_plain(local, id, plain, started, &mut granted);
                if let Some((slot, ticket)) = granted {
                    shared.pass(slot, ticket);
                }
            }
            (Some(Pending::Queued { plain, started, .. }), Turn::Expired) if !closing => {
                self.refuse(id, slot, Refusal::DeadlineExceeded, plain.head_len, plain.close, started);
            }
            // The connection left while it waited, or is closing (or the
            // thread closes): the turn goes on to the next waiter.
            (queued, turn) => {
                if let Turn::Granted(ticket) = turn {
                    shared.pass(slot, ticket);
                }
                if queued.is_some() {
                    self.close(id);
                }
            }
        }
    }

    /// Reads queued for a turn whose deadline has passed: withdrawn from
    /// their device's queue and answered `DeadlineExceeded`. One no longer
    /// in the queue was told its turn, and hears of it next.
    pub(super) fn expire_queued(&mut self, now: Instant) {
        let Source::Stores(app) = &self.shared.source else { return };
        let app = Arc::clone(app);
        let mut i = 0;
        while i < self.queued.len() {
            let (deadline, id) = self.queued[i];
            let waiting = match self.conn(id).map(|c| &c.pending) {
                Some(&Pending::Queued { slot, waiter, .. }) => Some((slot, waiter)),
                _ => None,
            };
            if waiting.is_some() && deadline > now {
                i += 1;
                continue;
            }
            self.queued.swap_remove(i);
            let Some((slot, waiter)) = waiting else { continue };
            let admission = &app.node.slots[slot].admission;
            if !admission.withdraw(waiter) {
                continue;
            }
            admission.deadline_exceeded.fetch_add(1, Ordering::Relaxed);
            let Some(c) = self.conn(id) else { continue };
            let Pending::Queued { plain, started, .. } = std::mem::replace(&mut c.pending, Pending::None) else {
                continue;
            };
            if c.closing {
                self.close(id);
            } else {
                self.refuse(id, slot, Refusal::DeadlineExceeded, plain.head_len, plain.close, started);
            }
        }
    }

    /// The earliest deadline of the reads queued for a turn.
    pub(super) fn next_expiry(&self) -> Option<Instant> {
        self.queued.iter().map(|&(deadline, _)| deadline).min()
    }

    /// A plain read, first (`granted` empty) or again with the turn on its
    /// device it waited for (taken from `granted` when used; the caller
    /// passes on one left there).
    fn read_plain(
        &mut self,
        local: &mut Local<'_, '_>,
        id: ConnId,
        plain: Plain,
        started: Instant,
        granted: &mut Option<(usize, Ticket)>,
    ) {
        let Plain { head_len, head_only, close, key, deadline_ms } = plain;
        let shared = Arc::clone(&self.shared);
        let app = match &shared.source {
            Source::Stores(app) => app,
            Source::Memory(shards) => {
                let bytes = shards.read().expect("never poisoned").get(&key).cloned();
                match bytes {
                    Some(bytes) => {
                        let stat = ShardStat {
                            size: bytes.len() as u64,
                            crc32c: crc32c::crc32c(&bytes),
                            written_unix_ms: 0,
                            sequence: 0,
                            chunks: 0,
                        };
                        let body = if head_only { Vec::new() } else { bytes.to_vec() };
                        self.answer_shard(id, None, &stat, body, head_only, close, head_len, started);
                    }
                    None => self.through_handler(id),
                }
                return;
            }
        };
        let node = &app.node;
        if !app.shard_read_delay.is_zero() {
            return self.through_handler(id);
        }
        // The route is taken under the key's stripe (a put finishing on
        // another device would make a sole candidate stale, and the tidy
        // after it remove the copy read here); a write of the stripe in
        // progress sends the request the way that waits for it.
        let Ok(stripe) = node.stripe(&key).try_read() else { return self.through_handler(id) };
        let route = node.route(&key);
        let (Route::Sole(slot) | Route::Refuse { slot, sole: true }) = route else {
            return self.through_handler(id);
        };
        let Some(store) = node.slots[slot].store.as_ref() else { return self.through_handler(id) };
        if let Some(hit) = store.cached(&key) {
            drop(stripe);
            let body = if head_only { Vec::new() } else { hit.bytes.to_vec() };
            self.answer_shard(id, Some(slot), &hit.stat, body, head_only, close, head_len, started);
            return;
        }
        if matches!(route, Route::Refuse { .. }) && granted.is_none() {
            if head_only {
                return self.through_handler(id);
            }
            // Its device's queue is full: refused as the handler would.
            drop(stripe);
            node.slots[slot].admission.overloaded.fetch_add(1, Ordering::Relaxed);
            return self.refuse(id, slot, Refusal::Overloaded, head_len, close, started);
        }
        if head_only {
            // A stat is an index probe: on this thread, at once.
            let stat = if slot == self.slot { local.stat(&key) } else { None };
            drop(stripe);
            match stat {
                Some(Some(stat)) => {
                    self.answer_shard(id, Some(slot), &stat, Vec::new(), true, close, head_len, started);
                }
                _ => self.through_handler(id),
            }
            return;
        }
        let ticket = match granted.take() {
            Some((granted_slot, ticket)) if granted_slot == slot => ticket,
            Some(other) => {
                // The shard moved while the read waited: the handler finds it.
                *granted = Some(other);
                return self.through_handler(id);
            }
            None => {
                let deadline = deadline_ms.map(|ms| started + Duration::from_millis(ms));
                // Its mailbox is cloned only when it is queued.
                let call = || {
                    let mailbox = Arc::clone(&self.mailbox);
                    move |turn| mailbox.post(Message::Admitted { conn: id, slot, turn }).is_ok()
                };
                match node.slots[slot].admission.try_admit_or_queue(deadline, call) {
                    Now::Granted(ticket) => ticket,
                    Now::Refused(why) => {
                        drop(stripe);
                        return self.refuse(id, slot, why, head_len, close, started);
                    }
                    Now::Queued(waiter) => {
                        // Looked up again when its turn comes: the stripe
                        // is not held while it waits.
                        drop(stripe);
                        if let Some(d) = deadline {
                            self.queued.push((d, id));
                        }
                        let plain = Plain { head_len, head_only, close, key, deadline_ms };
                        if let Some(c) = self.conn(id) {
                            c.pending = Pending::Queued { slot, waiter, plain, started };
                        }
                        return;
                    }
                }
            }
        };
        if let Some(c) = self.conn(id) {
            c.pending = Pending::Read { slot, ticket: Some(ticket), started, head_len, close, placed: None };
        }
        if slot == self.slot {
            // Answered on this thread, which gives its front a turn after
            // answering reads (or looks for its work before it waits).
            let mailbox = Arc::clone(&self.mailbox);
            local.read(key, None, move |result| {
                let _ = mailbox.post_here(Message::Read { conn: id, result });
            });
            return;
        }
        // Looked up under the stripe, as the holder's thread would.
        let key = match store.placed(&key) {
            Some(read) => match self.read_placed(id, read, key) {
                Ok(()) => return,
                Err(key) => key,
            },
            None => key,
        };
        self.ask_holder(id, slot, key);
        drop(stripe);
    }

    /// Has `slot`'s store thread read `key` for the connection (its
    /// pending read set), or the handler answer when it cannot.
    pub(super) fn ask_holder(&mut self, id: ConnId, slot: usize, key: Vec<u8>) {
        let Source::Stores(app) = &self.shared.source else { return };
        let Some(store) = app.node.slots[slot].store.as_ref() else {
            self.give_back_ticket(id);
            return self.through_handler(id);
        };
        let mailbox = Arc::clone(&self.mailbox);
        let done = move |result| {
            let _ = mailbox.post(Message::Read { conn: id, result });
        };
        if let Err(e) = store.submit_read(key, None, done) {
            // Its queue is full (or it stopped): the handler says so.
            tracing::debug!(device = slot, error = %e, "store thread front: read not queued");
            self.give_back_ticket(id);
            self.through_handler(id);
        }
    }

    pub(super) fn give_back_ticket(&mut self, id: ConnId) {
        let shared = Arc::clone(&self.shared);
        let Some(c) = self.conn(id) else { return };
        if let Pending::Read { slot, ticket: Some(t), .. } = std::mem::replace(&mut c.pending, Pending::None) {
            shared.give_back(slot, t);
        }
    }

    /// A read started by `fast` finished.
    pub(super) fn read_done(&mut self, id: ConnId, result: shardstore::Result<Read>) {
        let shared = Arc::clone(&self.shared);
        let Some(c) = self.conn(id) else { return };
        let Pending::Read { slot, ticket, started, head_len, close, .. } =
            std::mem::replace(&mut c.pending, Pending::None)
        else {
            return;
        };
        if let Some(t) = ticket {
            shared.give_back(slot, t);
        }
        let closing = c.closing;
        if closing {
            self.close(id);
            return;
        }
        match result {
            Ok(Read::Shard { stat, bytes, .. }) => {
                self.answer_shard(id, Some(slot), &stat, bytes, false, close, head_len, started);
            }
            // Not found where the route said, or a failure: the handler's
            // answer (its search proves an absence; its errors are the
            // router's).
            _ => self.through_handler(id),
        }
    }

    /// Answers a shard read: `body` (empty for a `HEAD`) with the shard's
    /// size and CRC, as the router's handler does.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn answer_shard(
        &mut self,
        id: ConnId,
        slot: Option<usize>,
        stat: &ShardStat,
        body: Vec<u8>,
        head_only: bool,
        close: bool,
        head_len: usize,
        started: Instant,
    ) {
        let shared = Arc::clone(&self.shared);
        let Some(c) = self.conn(id) else { return };
        c.start += head_len;
        if let (Source::Stores(app), Some(slot), false) = (&shared.source, slot, head_only) {
            let traffic = &app.node.slots[slot].traffic;
            traffic.reads.fetch_add(1, Ordering::Relaxed);
            traffic.read_bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        }
        shard_head(&mut c.out, stat, close);
        if body.len() <= BODY_COPIED_BYTES_MAX {
            c.out.extend_from_slice(&body);
        } else {
            c.body = body;
        }
        c.close_after = close;
        c.sent = 0;
        crate::metrics::observe(if head_only { 2 } else { 1 }, 200, started);
        self.send(id);
    }

    /// Answers a read its device's admission refused, as the handler
    /// would (`api::refusal`), without the trip to it.
    fn refuse(&mut self, id: ConnId, slot: usize, why: Refusal, head_len: usize, close: bool, started: Instant) {
        let Some(c) = self.conn(id) else { return };
        let response = axum::response::IntoResponse::into_response(crate::api::refusal(slot, why));
        let status = response.status().as_u16();
        let Some((keep_alive, body)) = front::encode_ready(&mut c.out, response, false, close) else {
            // Not an answer in memory after all: the handler's.
            return self.through_handler(id);
        };
        c.start += head_len;
        c.out.extend_from_slice(&body);
        c.close_after = !keep_alive;
        c.sent = 0;
        crate::metrics::observe(1, status, started);
        self.send(id);
    }

    /// Has the router's handler answer the request at the start of the
    /// connection's buffer, on tokio; its answer comes back as a message.
    pub(super) fn through_handler(&mut self, id: ConnId) {
        let max = self.shared.header_bytes_max;
        let Some(c) = self.conn(id) else { return };
        let head = match front::parse(&c.buf[c.start..c.filled], max) {
            Ok(head) if head.body == 0 => head,
            // A body, or not a shard request after all: tokio's front.
            _ => return self.hand_off(id),
        };
        c.start += head.len;
        c.pending = Pending::Handler;
        let (mailbox, shards) = (Arc::clone(&self.mailbox), Arc::clone(&self.shared.shards));
        let front::Head { req, close, .. } = head;
        self.shared.runtime.spawn(async move {
            let head_only = req.method() == axum::http::Method::HEAD;
            let op = crate::metrics::operation(req.method(), req.uri().path());
            let started = Instant::now();
            let response = shards(req).await;
            crate::metrics::observe(op, response.status().as_u16(), started);
            let mut out = Vec::new();
            let (bytes, keep_alive) = match front::encode_head(&mut out, response, head_only, close).await {
                Ok((keep_alive, body)) => {
                    out.extend_from_slice(&body);
                    (out, keep_alive)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "store thread front: no answer to write");
                    (Vec::new(), false)
                }
            };
            let _ = mailbox.post(Message::Answer { conn: id, bytes, keep_alive });
        });
    }

    /// An answer from the handler, to write.
    pub(super) fn handler_answered(&mut self, id: ConnId, bytes: Vec<u8>, keep_alive: bool) {
        let Some(c) = self.conn(id) else { return };
        c.pending = Pending::None;
        if c.closing || bytes.is_empty() {
            c.closing = true;
            self.close(id);
            return;
        }
        c.out = bytes;
        c.sent = 0;
        c.close_after = !keep_alive;
        self.send(id);
    }
}
