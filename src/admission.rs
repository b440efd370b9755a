//! Fair admission at the network edges (RTMP, HTTP): who gets a connection
//! slot, counted by source, and refusals that are counted and logged at a
//! bounded rate.
//!
//! Flow at accept:
//!
//! ```text
//! peer address -> Source (an IPv4 address, or an IPv6 /64: one host's share)
//!   -> Slots::admit: over `per_source` unproven connections from it -> refused
//!                    all slots taken -> evicted for the newcomer: the
//!                    connection waiting longest without progress (RTMP:
//!                    not finished the handshake; HTTP: no request in
//!                    flight), else (RTMP) the oldest unproven one that has
//!                    had its grace (else refused)
//!   -> progress (RTMP: the handshake; HTTP: a request head, undone when its
//!      response is sent: waiting for the next request is no progress)
//!   -> the connection proves itself (RTMP: a publish with a valid key;
//!      HTTP: nothing, every connection stays counted by source)
//!   -> closed: its slot is free
//! refused / evicted -> Refusals: a counter per reason (read by a metrics
//!                      layer), one WARN per interval with the counts since
//!                      the last
//! ```
//!
//! An attacker holding many connections from one address gets `per_source`
//! of them. One with many addresses whose connections never make progress
//! (slowloris, idle keep-alives) only evicts its own kind: a newcomer
//! always gets in, an HTTP client that sends its request at once is busy
//! before its turn to go could come, and an encoder
//! finishes the handshake in one round trip, after which only connections
//! that made progress too and have had their grace can take its slot
//! (an encoder publishes well within it). Pure: no clock beyond the `now`
//! handed in, no I/O (besides the log lines).
//!
//! [`raise_nofile_limit`] lifts the open-file soft limit to the hard one at
//! start, as Go's runtime does: under systemd the soft limit is 1024, which
//! a busy gateway reaches before its own `max_connections`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Whose share a connection counts against: an IPv4 address, or the /64 of
/// an IPv6 address (the usual smallest allocation to one site, so one host
/// cannot take a slot per address of its prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    /// The share `ip` counts against. IPv4-mapped IPv6 addresses (a dual
    /// stack listener's view of IPv4 peers) count as the IPv4 address.
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                Self(IpAddr::V6(prefix.into()))
            }
            v4 => Self(v4),
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its source already holds its share of unproven connections.
    PerSource,
    /// Every slot is taken, by proven connections or by unproven ones
    /// still in their grace.
    Full,
}

/// Which connections a newcomer may take the slot of when all are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// None: the newcomer is refused.
    Never,
    /// The one waiting longest without progress (an HTTP connection with
    /// no request in flight); never one that is busy.
    Waiting,
    /// The one waiting longest without progress, else the oldest unproven
    /// one that came at least this long ago (an RTMP connection that
    /// finished its handshake but never published).
    WaitingThenUnprovenAfter(Duration),
}

/// A connection that holds a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(u64);

/// What [`Slots::admit`] decided.
#[derive(Debug)]
pub struct Admitted<T> {
    /// The new connection's slot; hand it to [`Slots::proven`] and
    /// [`Slots::closed`].
    pub ticket: Ticket,
    /// The unproven connection evicted to make room, to be closed now; its
    /// slot passed to the newcomer, so its own `closed` is a no-op.
    pub evicted: Option<T>,
}

struct Entry<T> {
    source: Source,
    /// Set while unproven: what closes it when it is evicted.
    handle: Option<T>,
    /// While it is waiting without progress: its place in
    /// [`Slots::waiting`].
    waiting: Option<u64>,
}

/// Connection slots with a share per source and eviction of a waiting
/// connection when full. `T` closes an evicted connection (a cancellation
/// token). Every map is bounded by `max`: entries live only while their
/// connection holds a slot.
pub struct Slots<T> {
    max: usize,
    per_source: usize,
    eviction: Eviction,
    next: u64,
    /// Orders [`Slots::waiting`]: taken each time a connection starts
    /// waiting.
    next_wait: u64,
    live: HashMap<Ticket, Entry<T>>,
    /// Unproven connections and when they came, oldest (lowest ticket)
    /// first.
    unproven: BTreeMap<Ticket, Instant>,
    /// Those of them waiting without progress, the one waiting longest
    /// first.
    waiting: BTreeMap<u64, Ticket>,
    unproven_by_source: HashMap<Source, usize>,
}

impl<T> Slots<T> {
    /// `max` slots, at most `per_source` unproven connections per source;
    /// when all are taken, a newcomer takes a slot as `eviction` allows.
    pub fn new(max: usize, per_source: usize, eviction: Eviction) -> Self {
        Self {
            max: max.max(1),
            per_source: per_source.max(1),
            eviction,
            next: 0,
            next_wait: 0,
            live: HashMap::new(),
            unproven: BTreeMap::new(),
            waiting: BTreeMap::new(),
            unproven_by_source: HashMap::new(),
        }
    }

    /// Whether a newcomer (from a source under its share) would get a slot
    /// now: one is free, or one may be evicted for it.
    pub fn has_room(&self, now: Instant) -> bool {
        self.live.len() < self.max || self.victim(now).is_some()
    }

    /// The connection a newcomer would evict at `now`.
    fn victim(&self, now: Instant) -> Option<Ticket> {
        let waiting = || self.waiting.values().next().copied();
        match self.eviction {
            Eviction::Never => None,
            Eviction::Waiting => waiting(),
            Eviction::WaitingThenUnprovenAfter(grace) => waiting().or_else(|| {
                self.unproven
                    .iter()
                    .next()
                    .filter(|(_, at)| now.saturating_duration_since(**at) >= grace)
                    .map(|(t, _)| *t)
            }),
        }
    }

    /// Connections holding a slot.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no connection holds a slot.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Admits a connection from `source` at `now`, unproven, closed
    /// through `handle` should it be evicted.
    pub fn admit(
        &mut self,
        source: Source,
        handle: T,
        now: Instant,
    ) -> Result<Admitted<T>, Refusal> {
        if self.unproven_by_source.get(&source).copied().unwrap_or(0) >= self.per_source {
            return Err(Refusal::PerSource);
        }
        let mut evicted = None;
        if self.live.len() >= self.max {
            match self.victim(now) {
                Some(victim) => evicted = self.remove(victim).and_then(|e| e.handle),
                None => return Err(Refusal::Full),
            }
        }
        let ticket = Ticket(self.next);
        self.next += 1;
        let wait = self.next_wait;
        self.next_wait += 1;
        self.live.insert(
            ticket,
            Entry {
                source,
                handle: Some(handle),
                waiting: Some(wait),
            },
        );
        self.unproven.insert(ticket, now);
        self.waiting.insert(wait, ticket);
        *self.unproven_by_source.entry(source).or_default() += 1;
        Ok(Admitted { ticket, evicted })
    }

    /// The connection made progress (it is not just holding a slot): it is
    /// evicted only as its [`Eviction`] allows for busy ones, and after
    /// every one waiting.
    pub fn progressed(&mut self, ticket: Ticket) {
        if let Some(entry) = self.live.get_mut(&ticket) {
            if let Some(wait) = entry.waiting.take() {
                self.waiting.remove(&wait);
            }
        }
    }

    /// The unproven connection is waiting again without progress (an HTTP
    /// connection sent its response and waits for the next request): it
    /// goes behind every one waiting longer.
    pub fn waiting(&mut self, ticket: Ticket) {
        if let Some(entry) = self.live.get_mut(&ticket) {
            if entry.handle.is_some() && entry.waiting.is_none() {
                let wait = self.next_wait;
                self.next_wait += 1;
                entry.waiting = Some(wait);
                self.waiting.insert(wait, ticket);
            }
        }
    }

    /// The connection proved itself: it no longer counts against its
    /// source's share and is never evicted.
    pub fn proven(&mut self, ticket: Ticket) {
        if let Some(entry) = self.live.get_mut(&ticket) {
            if entry.handle.take().is_some() {
                self.unproven.remove(&ticket);
                if let Some(wait) = entry.waiting.take() {
                    self.waiting.remove(&wait);
                }
                Self::uncount(&mut self.unproven_by_source, entry.source);
            }
        }
    }

    /// The connection closed; its slot is free.
    pub fn closed(&mut self, ticket: Ticket) {
        self.remove(ticket);
    }

    fn remove(&mut self, ticket: Ticket) -> Option<Entry<T>> {
        let entry = self.live.remove(&ticket)?;
        if let Some(wait) = entry.waiting {
            self.waiting.remove(&wait);
        }
        if entry.handle.is_some() {
            self.unproven.remove(&ticket);
            Self::uncount(&mut self.unproven_by_source, entry.source);
        }
        Some(entry)
    }

    fn uncount(counts: &mut HashMap<Source, usize>, source: Source) {
        if let Some(n) = counts.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&source);
            }
        }
    }
}

/// Bytes of a refusal's detail a log line carries at most.
pub const MAX_DETAIL: usize = 200;

/// Refusals of one edge, counted by reason, logged at most once per
/// interval: an attacker must not be able to fill the log (one WARN per
/// refused connection was 220,000 lines in 45 s).
#[derive(Debug)]
pub struct Refusals {
    what: &'static str,
    reasons: &'static [&'static str],
    /// Totals since start, per reason, for a metrics layer.
    totals: Vec<AtomicU64>,
    /// Counts since the last log line, when it was written, and the
    /// detail of the latest refusal that had one.
    pending: Mutex<(Vec<u64>, Option<Instant>, Option<String>)>,
    interval: Duration,
}

impl Refusals {
    /// Counts for `what` (e.g. "RTMP connections"), one per reason.
    pub fn new(what: &'static str, reasons: &'static [&'static str], interval: Duration) -> Self {
        Self {
            what,
            reasons,
            totals: reasons.iter().map(|_| AtomicU64::new(0)).collect(),
            pending: Mutex::new((vec![0; reasons.len()], None, None)),
            interval,
        }
    }

    /// Counts one refusal for `reasons[reason]`; writes the WARN line when
    /// the interval since the last one has passed.
    pub fn note(&self, reason: usize, now: Instant) {
        self.note_why(reason, None, now);
    }

    /// [`Self::note`] with what was wrong, e.g. the protocol error: the
    /// WARN line shows the latest one (cut to [`MAX_DETAIL`] bytes), so an
    /// operator sees why connections fail without a line for each.
    pub fn note_why(&self, reason: usize, detail: Option<&str>, now: Instant) {
        let Some(total) = self.totals.get(reason) else {
            return;
        };
        total.fetch_add(1, Ordering::Relaxed);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.0[reason] += 1;
        if let Some(detail) = detail {
            let mut end = detail.len().min(MAX_DETAIL);
            while !detail.is_char_boundary(end) {
                end -= 1;
            }
            pending.2 = Some(detail[..end].to_owned());
        }
        let due = pending
            .1
            .is_none_or(|last| now.duration_since(last) >= self.interval);
        if !due {
            return;
        }
        let counts: Vec<String> = self
            .reasons
            .iter()
            .zip(&pending.0)
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        let since = pending.1.map(|last| now.duration_since(last));
        let last = pending.2.take().unwrap_or_default();
        tracing::warn!(
            refused = %counts.join(", "),
            since = ?since,
            last = %last,
            "refusing {}",
            self.what
        );
        pending.0.iter_mut().for_each(|n| *n = 0);
        pending.1 = Some(now);
    }

    /// Refusals for `reasons[reason]` since start.
    pub fn total(&self, reason: usize) -> u64 {
        self.totals
            .get(reason)
            .map_or(0, |t| t.load(Ordering::Relaxed))
    }
}

/// Raises this process's soft limit on open files to its hard limit and
/// returns the new soft limit (`None` when the limit is unlimited).
pub fn raise_nofile_limit() -> std::io::Result<Option<u64>> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit).map_err(std::io::Error::from)?;
    }
    Ok(getrlimit(Resource::Nofile).current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn v4(last: u8) -> Source {
        Source::of(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(a.into()), Source::of(b.into()));
        assert_ne!(Source::of(a.into()), Source::of(c.into()));
        let mapped: Ipv6Addr = "::ffff:10.0.0.7".parse().unwrap();
        assert_eq!(Source::of(mapped.into()), v4(7));
    }

    const GRACE: Eviction = Eviction::WaitingThenUnprovenAfter(Duration::from_secs(1));

    #[test]
    fn a_source_gets_its_share_and_proven_ones_do_not_count() {
        let now = Instant::now();
        let mut slots = Slots::new(10, 2, GRACE);
        let a = slots.admit(v4(1), "a", now).unwrap().ticket;
        slots.admit(v4(1), "b", now).unwrap();
        assert_eq!(
            slots.admit(v4(1), "c", now).unwrap_err(),
            Refusal::PerSource
        );
        // Another source is not affected.
        slots.admit(v4(2), "d", now).unwrap();
        slots.proven(a);
        slots.admit(v4(1), "e", now).unwrap();
        slots.closed(a);
        assert_eq!(slots.len(), 3);
    }

    #[test]
    fn full_evicts_the_oldest_unproven_after_its_grace_only() {
        let start = Instant::now();
        let later = start + Duration::from_secs(1);
        let mut slots = Slots::new(3, 3, GRACE);
        let first = slots.admit(v4(1), "first", start).unwrap().ticket;
        let second = slots.admit(v4(2), "second", start).unwrap().ticket;
        let third = slots.admit(v4(3), "third", start).unwrap().ticket;
        slots.proven(first);
        slots.progressed(second);
        slots.progressed(third);
        // Too soon: the oldest unproven one is still in its grace.
        let soon = start + Duration::from_millis(500);
        assert_eq!(
            slots.admit(v4(4), "early", soon).unwrap_err(),
            Refusal::Full
        );
        let admitted = slots.admit(v4(4), "fourth", later).unwrap();
        assert_eq!(admitted.evicted, Some("second"));
        assert_eq!(slots.len(), 3);
        // The evicted one's own close frees nothing more.
        slots.closed(second);
        assert_eq!(slots.len(), 3);
        let mut all = Slots::new(1, 1, GRACE);
        let t = all.admit(v4(1), (), start).unwrap().ticket;
        all.proven(t);
        assert_eq!(all.admit(v4(2), (), later).unwrap_err(), Refusal::Full);
        let mut no_evict = Slots::new(1, 1, Eviction::Never);
        no_evict.admit(v4(1), (), start).unwrap();
        assert_eq!(no_evict.admit(v4(2), (), later).unwrap_err(), Refusal::Full);
    }

    #[test]
    fn maps_empty_when_every_connection_closed() {
        let now = Instant::now();
        let mut slots = Slots::new(4, 4, GRACE);
        let tickets: Vec<Ticket> = (0..4)
            .map(|i| slots.admit(v4(i), (), now).unwrap().ticket)
            .collect();
        slots.proven(tickets[1]);
        for t in tickets {
            slots.closed(t);
        }
        assert!(slots.is_empty());
        assert!(slots.unproven.is_empty() && slots.unproven_by_source.is_empty());
        assert!(slots.waiting.is_empty());
    }

    #[test]
    fn connections_without_progress_go_first_and_without_grace() {
        let start = Instant::now();
        let mut slots = Slots::new(2, 2, GRACE);
        let publisher = slots.admit(v4(1), "publisher", start).unwrap().ticket;
        slots.admit(v4(2), "idle", start).unwrap();
        slots.progressed(publisher);
        // At once: the idle one goes, although the publisher is older.
        let a = slots.admit(v4(3), "a", start).unwrap();
        assert_eq!(a.evicted, Some("idle"));
        let b = slots.admit(v4(4), "b", start).unwrap();
        assert_eq!(b.evicted, Some("a"));
        slots.progressed(b.ticket);
        // Both made progress, both in their grace: refused.
        assert_eq!(slots.admit(v4(5), "c", start).unwrap_err(), Refusal::Full);
    }

    #[test]
    fn http_evicts_the_connection_waiting_longest_and_never_a_busy_one() {
        let now = Instant::now();
        let mut slots = Slots::new(3, 3, Eviction::Waiting);
        let a = slots.admit(v4(1), "a", now).unwrap().ticket;
        let b = slots.admit(v4(2), "b", now).unwrap().ticket;
        let c = slots.admit(v4(3), "c", now).unwrap().ticket;
        // b is busy with a request; a served one and waits again, now
        // behind c, which has sent nothing since it came.
        slots.progressed(b);
        slots.progressed(a);
        slots.waiting(a);
        assert!(slots.has_room(now));
        let d = slots.admit(v4(4), "d", now).unwrap();
        assert_eq!(d.evicted, Some("c"));
        slots.closed(c);
        let e = slots.admit(v4(5), "e", now).unwrap();
        assert_eq!(e.evicted, Some("a"));
        // The newest waiting one goes next, never the busy b.
        slots.progressed(e.ticket);
        let f = slots.admit(v4(6), "f", now).unwrap();
        assert_eq!(f.evicted, Some("d"));
        slots.progressed(f.ticket);
        // All busy: no room, however long they have been at it.
        let later = now + Duration::from_secs(3600);
        assert!(!slots.has_room(later));
        assert_eq!(slots.admit(v4(7), "g", later).unwrap_err(), Refusal::Full);
        // Waiting twice does not take two places.
        slots.waiting(f.ticket);
        slots.waiting(f.ticket);
        assert_eq!(slots.waiting.len(), 1);
        slots.closed(f.ticket);
        slots.closed(b);
        slots.closed(e.ticket);
        assert!(slots.is_empty() && slots.waiting.is_empty());
    }

    #[test]
    fn refusals_are_counted_and_logged_once_per_interval() {
        let log = Refusals::new("test connections", &["a", "b"], Duration::from_secs(10));
        let start = Instant::now();
        for i in 0..100 {
            log.note(i % 2, start + Duration::from_millis(i as u64));
        }
        assert_eq!(log.total(0), 50);
        assert_eq!(log.total(1), 50);
        let pending = log.pending.lock().unwrap();
        // The first was logged at once; the other 99 wait for the interval.
        assert_eq!(pending.0.iter().sum::<u64>(), 99);
        assert_eq!(pending.1, Some(start));
    }
}
