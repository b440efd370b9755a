//! The provider records this node announces: which keys, in what order, and
//! how fast.
//!
//! ```text
//! P2p::provide(cids) -> Announcer::want (queued once)
//!   -> Announcer::next(now), within the budget -> Kademlia::start_providing (both DHTs)
//! P2p::stop_providing(cids) -> Announcer::forget -> Kademlia::stop_providing
//! ```
//!
//! Pure: the swarm task hands in the time and does what [`Announcer::next`]
//! says. The bounds:
//!
//! - The queue of keys not yet announced holds [`MAX_QUEUED`]; when it is
//!   full the oldest queued key is dropped, since a live segment matters
//!   most while it is new.
//! - Announcements start at most [`PER_SECOND`] a second, in bursts of up
//!   to [`BURST`] (a token bucket): each starts a DHT query per DHT.
//! - At most [`MAX_PROVIDED`] keys are provided, the memory store's
//!   `max_provided_keys`; past that the key provided longest ago is
//!   withdrawn to make room.
//!
//! Kademlia itself keeps each record, republishes it every 12 hours and
//! peers let it expire 48 hours after they got it (rust-libp2p's defaults).
//! Withdrawing is local: this node stops answering and republishing, and the
//! copies peers hold expire.

use libp2p::kad::RecordKey;
use std::collections::{HashSet, VecDeque};
use std::time::Instant;

/// Keys waiting to be announced, at most.
pub const MAX_QUEUED: usize = 1024;
/// Keys provided at once, at most: the memory store's `max_provided_keys`.
pub const MAX_PROVIDED: usize = 1024;
/// Announcements started per second, on average.
pub const PER_SECOND: f64 = 10.0;
/// Announcements started at once after a quiet spell, at most.
pub const BURST: f64 = 20.0;

/// One announcement to make now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    /// The key to announce (again, if it is provided already).
    pub key: RecordKey,
    /// A key to withdraw first, to stay within [`MAX_PROVIDED`].
    pub evict: Option<RecordKey>,
}

/// The keys this node provides and those waiting to be.
#[derive(Debug)]
pub struct Announcer {
    queue: VecDeque<RecordKey>,
    queued: HashSet<RecordKey>,
    /// Oldest first.
    provided: VecDeque<RecordKey>,
    provided_set: HashSet<RecordKey>,
    tokens: f64,
    refilled: Instant,
}

impl Announcer {
    /// An announcer with a full budget.
    pub fn new(now: Instant) -> Self {
        Self {
            queue: VecDeque::new(),
            queued: HashSet::new(),
            provided: VecDeque::new(),
            provided_set: HashSet::new(),
            tokens: BURST,
            refilled: now,
        }
    }

    /// Queues `key` unless it is queued or provided already.
    pub fn want(&mut self, key: RecordKey) {
        if self.provided_set.contains(&key) {
            return;
        }
        self.enqueue(key);
    }

    fn enqueue(&mut self, key: RecordKey) {
        if self.queued.contains(&key) {
            return;
        }
        if self.queue.len() >= MAX_QUEUED {
            if let Some(old) = self.queue.pop_front() {
                self.queued.remove(&old);
            }
        }
        self.queued.insert(key.clone());
        self.queue.push_back(key);
    }

    /// Queues every provided key again, to announce them to a DHT that just
    /// got its first peer (records started while it had none reached no one).
    pub fn reannounce(&mut self) {
        let keys: Vec<RecordKey> = self.provided.iter().cloned().collect();
        for key in keys {
            self.enqueue(key);
        }
    }

    /// Forgets `key`; true if it was provided (and should be withdrawn).
    pub fn forget(&mut self, key: &RecordKey) -> bool {
        if self.queued.remove(key) {
            self.queue.retain(|k| k != key);
        }
        let provided = self.provided_set.remove(key);
        if provided {
            self.provided.retain(|k| k != key);
        }
        provided
    }

    /// The next announcement, if one is queued and the budget allows it.
    pub fn next(&mut self, now: Instant) -> Option<Announce> {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * PER_SECOND).min(BURST);
        self.refilled = now;
        if self.tokens < 1.0 {
            return None;
        }
        let key = self.queue.pop_front()?;
        self.queued.remove(&key);
        self.tokens -= 1.0;
        let mut evict = None;
        if !self.provided_set.contains(&key) {
            if self.provided.len() >= MAX_PROVIDED {
                evict = self.provided.pop_front();
                if let Some(old) = &evict {
                    self.provided_set.remove(old);
                }
            }
            self.provided_set.insert(key.clone());
            self.provided.push_back(key.clone());
        }
        Some(Announce { key, evict })
    }

    /// Keys provided now.
    pub fn provided(&self) -> usize {
        self.provided.len()
    }

    /// Keys waiting to be announced.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(n: usize) -> RecordKey {
        RecordKey::new(&n.to_be_bytes())
    }

    fn drain(a: &mut Announcer, now: Instant) -> Vec<Announce> {
        std::iter::from_fn(|| a.next(now)).collect()
    }

    #[test]
    fn announces_within_the_budget() {
        let t0 = Instant::now();
        let mut a = Announcer::new(t0);
        for n in 0..100 {
            a.want(key(n));
        }
        // A burst at first, then PER_SECOND a second.
        assert_eq!(drain(&mut a, t0).len(), BURST as usize);
        assert!(a.next(t0).is_none());
        let later = t0 + Duration::from_secs(1);
        assert_eq!(drain(&mut a, later).len(), PER_SECOND as usize);
        // Unspent budget does not pile up past a burst.
        let much_later = later + Duration::from_secs(3600);
        assert_eq!(drain(&mut a, much_later).len(), BURST as usize);
        assert_eq!(a.provided(), 50);
        assert_eq!(a.queued(), 50);
    }

    #[test]
    fn each_key_once() {
        let t0 = Instant::now();
        let mut a = Announcer::new(t0);
        a.want(key(1));
        a.want(key(1));
        assert_eq!(drain(&mut a, t0).len(), 1);
        a.want(key(1));
        assert!(a.next(t0).is_none(), "already provided");
    }

    #[test]
    fn a_full_queue_drops_its_oldest() {
        let t0 = Instant::now();
        let mut a = Announcer::new(t0);
        for n in 0..MAX_QUEUED + 5 {
            a.want(key(n));
        }
        assert_eq!(a.queued(), MAX_QUEUED);
        assert_eq!(a.next(t0).map(|x| x.key), Some(key(5)));
    }

    #[test]
    fn past_the_store_limit_the_oldest_goes() {
        let mut now = Instant::now();
        let mut a = Announcer::new(now);
        let mut evicted = Vec::new();
        for n in 0..MAX_PROVIDED + 3 {
            a.want(key(n));
            now += Duration::from_secs(1);
            let x = a.next(now).expect("budget after a second");
            assert_eq!(x.key, key(n));
            evicted.extend(x.evict);
        }
        assert_eq!(a.provided(), MAX_PROVIDED);
        assert_eq!(evicted, vec![key(0), key(1), key(2)]);
        // An evicted key can be provided again.
        a.want(key(0));
        assert_eq!(a.queued(), 1);
    }

    #[test]
    fn forgotten_keys_are_withdrawn_or_never_announced() {
        let t0 = Instant::now();
        let mut a = Announcer::new(t0);
        a.want(key(1));
        a.want(key(2));
        assert_eq!(a.next(t0).map(|x| x.key), Some(key(1)));
        assert!(a.forget(&key(1)), "provided: withdraw it");
        assert!(!a.forget(&key(2)), "only queued");
        assert!(a.next(t0).is_none());
        assert_eq!(a.provided(), 0);
        assert!(!a.forget(&key(3)));
    }

    #[test]
    fn reannounces_what_it_provides_without_counting_it_twice() {
        let t0 = Instant::now();
        let mut a = Announcer::new(t0);
        for n in 0..3 {
            a.want(key(n));
        }
        assert_eq!(drain(&mut a, t0).len(), 3);
        a.reannounce();
        let again = drain(&mut a, t0);
        assert_eq!(again.len(), 3);
        assert!(again.iter().all(|x| x.evict.is_none()));
        assert_eq!(a.provided(), 3);
    }
}
