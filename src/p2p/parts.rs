//! Part announcements over gossipsub: an origin tells its mirrors of each
//! part of its own low-latency streams as it is stored; a mirror takes
//! only what the stream's key signed, each once, into a bounded queue.
//!
//! ```text
//! origin: (stream, Media) broadcast from node.rs --> KeyStore key of the stream
//!     --> Announcement (Sequencer: sequences only grow) --> encode (signed)
//!     --> gossipsub /meshcast/parts/<b64url(/ipns/<mh>)>
//! mirror: follow(name) --> subscribe --> PubsubEvent::Message on the topic
//!     --> Announcement::decode (size, signature, name) --> Replay::check
//!     --> try_send into the follower's queue (FOLLOW_QUEUE; full: dropped, counted)
//!     --> Accept (forwarded) / Ignore (old, unfollowed, no room) / Reject (forged)
//! ```
//!
//! A peer that floods a topic costs its follower's queue and a signature
//! check per message, nothing more: nothing is stored, forwarded or
//! fetched for a message that does not verify, and a full queue drops what
//! arrives. The announcement's format is `ipns::announce`'s (pure).

use super::{P2p, P2pError, PubsubEvent, Verdict};
use crate::ipns::announce::{self, Announcement, Media, Replay, Sequencer};
use crate::ipns::keys::KeyStore;
use crate::ipns::Name;
use libp2p::identity::Keypair;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// Announcements queued per followed name; more are dropped.
pub const FOLLOW_QUEUE: usize = 64;

/// What became of the announcements received, since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Verified, new and queued.
    pub accepted: u64,
    /// Not signed by the name's key, or malformed.
    pub refused: u64,
    /// Not newer than one taken before.
    pub replayed: u64,
    /// Verified and new, but the queue was full.
    pub dropped: u64,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

struct Follow {
    tx: mpsc::Sender<Announcement>,
    replay: Replay,
}

struct Inner {
    p2p: P2p,
    follows: Mutex<HashMap<Name, Follow>>,
    accepted: AtomicU64,
    refused: AtomicU64,
    replayed: AtomicU64,
    dropped: AtomicU64,
    metrics: Option<Family<OutcomeLabel, Counter>>,
}

/// The announcement service. Cheap to clone.
#[derive(Clone)]
pub struct Announcements {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Announcements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Announcements").finish_non_exhaustive()
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Announcements {
    /// Starts the service: judges every message on an announcement topic
    /// and, with `own` (each own stream's parts, from the HLS stage by way
    /// of `node.rs`), signs and publishes them. With a `registry`, what
    /// arrives is counted in it by outcome.
    pub fn spawn(
        p2p: P2p,
        keys: KeyStore,
        own: Option<broadcast::Receiver<(String, Media)>>,
        registry: Option<&mut Registry>,
        shutdown: CancellationToken,
    ) -> Self {
        let metrics = registry.map(|r| {
            let family = Family::<OutcomeLabel, Counter>::default();
            r.sub_registry_with_prefix("parts").register(
                "announcements",
                "Part announcements received, by outcome: accepted (queued), refused (bad signature or malformed), replayed (old sequence), dropped (queue full); and sent",
                family.clone(),
            );
            family
        });
        let this = Self {
            inner: Arc::new(Inner {
                p2p: p2p.clone(),
                follows: Mutex::new(HashMap::new()),
                accepted: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                replayed: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                metrics,
            }),
        };
        tokio::spawn(
            this.clone()
                .run_pubsub(p2p.pubsub_events(), shutdown.clone()),
        );
        if let Some(own) = own {
            tokio::spawn(this.clone().run_publisher(keys, own, shutdown));
        }
        this
    }

    fn follows(&self) -> std::sync::MutexGuard<'_, HashMap<Name, Follow>> {
        self.inner.follows.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, outcome: &'static str, n: &AtomicU64) {
        n.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.inner.metrics {
            m.get_or_create(&OutcomeLabel { outcome }).inc();
        }
    }

    /// What became of the announcements received so far.
    pub fn counts(&self) -> Counts {
        let i = &self.inner;
        Counts {
            accepted: i.accepted.load(Ordering::Relaxed),
            refused: i.refused.load(Ordering::Relaxed),
            replayed: i.replayed.load(Ordering::Relaxed),
            dropped: i.dropped.load(Ordering::Relaxed),
        }
    }

    /// Follows a name's announcements: subscribes to its topic and returns
    /// the queue its verified, new announcements go to, in order, at most
    /// [`FOLLOW_QUEUE`] waiting. A second follower of a name replaces the
    /// first.
    pub async fn follow(&self, name: &Name) -> Result<mpsc::Receiver<Announcement>, P2pError> {
        let (tx, rx) = mpsc::channel(FOLLOW_QUEUE);
        self.follows().insert(
            *name,
            Follow {
                tx,
                replay: Replay::default(),
            },
        );
        self.inner.p2p.subscribe(&announce::topic(name)).await?;
        Ok(rx)
    }

    /// What a message on a followed name's topic deserves, counted; a
    /// verified, new one is queued.
    fn on_message(&self, name: &Name, data: &[u8]) -> Verdict {
        let outcome = {
            let mut follows = self.follows();
            let Some(f) = follows.get_mut(name) else {
                return Verdict::Ignore;
            };
            let outcome = judge(f, name, data);
            if outcome == Outcome::Closed {
                follows.remove(name);
            }
            outcome
        };
        let i = &self.inner;
        match outcome {
            Outcome::Accepted => {
                self.count("accepted", &i.accepted);
                Verdict::Accept
            }
            Outcome::Refused => {
                self.count("refused", &i.refused);
                Verdict::Reject
            }
            Outcome::Replayed => {
                self.count("replayed", &i.replayed);
                Verdict::Ignore
            }
            Outcome::Dropped => {
                self.count("dropped", &i.dropped);
                Verdict::Ignore
            }
            Outcome::Closed => Verdict::Ignore,
        }
    }

    async fn run_pubsub(
        self,
        mut events: broadcast::Receiver<PubsubEvent>,
        shutdown: CancellationToken,
    ) {
        loop {
            let ev = tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = events.recv() => ev,
            };
            match ev {
                Ok(PubsubEvent::Message {
                    topic,
                    data,
                    propagation_source,
                    id,
                }) => {
                    // Other topics are naming's to judge.
                    let Some(name) = announce::topic_name(&topic) else {
                        continue;
                    };
                    let verdict = self.on_message(&name, &data);
                    let _ = self
                        .inner
                        .p2p
                        .validate(id, propagation_source, verdict)
                        .await;
                }
                Ok(PubsubEvent::Subscribed { .. }) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!("part announcements skipped {n} pubsub events");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    async fn run_publisher(
        self,
        keys: KeyStore,
        mut own: broadcast::Receiver<(String, Media)>,
        shutdown: CancellationToken,
    ) {
        let mut signers: HashMap<String, (Keypair, Name, Sequencer)> = HashMap::new();
        loop {
            let (stream, media) = tokio::select! {
                _ = shutdown.cancelled() => return,
                m = own.recv() => match m {
                    Ok(m) => m,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!("{n} part announcements not sent (the announcer fell behind)");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            if !signers.contains_key(&stream) {
                let k = keys.clone();
                let s = stream.clone();
                match tokio::task::spawn_blocking(move || k.get_or_create(&s)).await {
                    Ok(Ok(key)) => {
                        let name = Name::from_public_key(&key.public());
                        signers.insert(stream.clone(), (key, name, Sequencer::default()));
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(%stream, "cannot announce parts: {e}");
                        continue;
                    }
                    Err(_) => return,
                }
            }
            let (key, name, seq) = signers.get_mut(&stream).expect("inserted above");
            let a = Announcement {
                name: *name,
                sequence: seq.next(now_us()),
                timestamp_ms: now_us() / 1000,
                media,
            };
            match a.encode(key) {
                Ok(bytes) => {
                    if let Err(e) = self.inner.p2p.publish(&announce::topic(name), bytes).await {
                        tracing::debug!(%stream, "announcing a part: {e}");
                    } else if let Some(m) = &self.inner.metrics {
                        m.get_or_create(&OutcomeLabel { outcome: "sent" }).inc();
                    }
                }
                Err(e) => tracing::warn!(%stream, "announcing a part: {e}"),
            }
        }
    }
}

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Accepted,
    Refused,
    Replayed,
    Dropped,
    /// The follower is gone.
    Closed,
}

/// Verifies a message for a followed name and queues it when it is new:
/// a forged one changes nothing (not even the replay state).
fn judge(f: &mut Follow, name: &Name, data: &[u8]) -> Outcome {
    let a = match Announcement::decode(name, data) {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!(%name, "announcement refused: {e}");
            return Outcome::Refused;
        }
    };
    if f.replay.check(a.sequence).is_err() {
        return Outcome::Replayed;
    }
    match f.tx.try_send(a) {
        Ok(()) => Outcome::Accepted,
        Err(mpsc::error::TrySendError::Full(_)) => Outcome::Dropped,
        Err(mpsc::error::TrySendError::Closed(_)) => Outcome::Closed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cid::Cid;

    fn signed(key: &Keypair, sequence: u64) -> Vec<u8> {
        let cid: Cid = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
            .parse()
            .unwrap();
        Announcement {
            name: Name::from_public_key(&key.public()),
            sequence,
            timestamp_ms: 0,
            media: Media {
                session: "s".into(),
                msn: 1,
                part: Some(0),
                cid,
                duration_ms: 500,
                independent: true,
                discontinuity: false,
                program_date_time_ms: 0,
                init: None,
                target_duration_secs: 2,
                part_target_ms: 500,
            },
        }
        .encode(key)
        .unwrap()
    }

    fn follow() -> (Follow, mpsc::Receiver<Announcement>) {
        let (tx, rx) = mpsc::channel(FOLLOW_QUEUE);
        (
            Follow {
                tx,
                replay: Replay::default(),
            },
            rx,
        )
    }

    #[test]
    fn a_forged_announcement_is_refused_and_changes_nothing() {
        let origin = Keypair::ed25519_from_bytes([1; 32]).unwrap();
        let other = Keypair::ed25519_from_bytes([2; 32]).unwrap();
        let name = Name::from_public_key(&origin.public());
        let (mut f, mut rx) = follow();
        // Signed by another key, with a sequence far ahead.
        let mut forged = signed(&other, u64::MAX);
        assert_eq!(judge(&mut f, &name, &forged), Outcome::Refused);
        // The origin's own bytes with a flipped bit.
        forged = signed(&origin, u64::MAX);
        forged[10] ^= 1;
        assert_eq!(judge(&mut f, &name, &forged), Outcome::Refused);
        assert!(rx.try_recv().is_err(), "nothing was queued");
        // The replay state did not move: the origin's next one is taken.
        assert_eq!(judge(&mut f, &name, &signed(&origin, 5)), Outcome::Accepted);
        assert_eq!(rx.try_recv().unwrap().sequence, 5);
        assert_eq!(judge(&mut f, &name, &signed(&origin, 5)), Outcome::Replayed);
    }

    #[test]
    fn a_flood_costs_the_queue_and_nothing_more() {
        let origin = Keypair::ed25519_from_bytes([1; 32]).unwrap();
        let name = Name::from_public_key(&origin.public());
        let (mut f, mut rx) = follow();
        let outcomes: Vec<Outcome> = (1..=FOLLOW_QUEUE as u64 + 36)
            .map(|seq| judge(&mut f, &name, &signed(&origin, seq)))
            .collect();
        let accepted = outcomes.iter().filter(|o| **o == Outcome::Accepted).count();
        let dropped = outcomes.iter().filter(|o| **o == Outcome::Dropped).count();
        assert_eq!((accepted, dropped), (FOLLOW_QUEUE, 36));
        // The queue holds the first ones, in order; room again takes more.
        assert_eq!(rx.try_recv().unwrap().sequence, 1);
        assert_eq!(
            judge(&mut f, &name, &signed(&origin, 1000)),
            Outcome::Accepted
        );
        drop(rx);
        assert_eq!(
            judge(&mut f, &name, &signed(&origin, 1001)),
            Outcome::Closed
        );
    }
}
