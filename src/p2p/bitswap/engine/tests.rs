//! The engine driven by hand: wants, blocks and presences from made-up
//! peers, time passed in, and the batches it hands out checked.

use super::*;
use crate::store::RAW;

fn block(i: u32) -> Block {
    Block::new(cid::Version::V1, RAW, format!("block {i}").into_bytes())
}

fn peer() -> PeerId {
    PeerId::random()
}

fn want_entry(b: &Block, t: WantType, sdh: bool) -> Entry {
    Entry::want(b.cid, 1, t, sdh)
}

fn wants(entries: Vec<(Entry, Option<u64>)>) -> Incoming {
    Incoming {
        wants: entries,
        ..Incoming::default()
    }
}

/// Every peer's next batch, each marked sent.
/// An engine that sends want-block to one peer, with `N` peers.
fn one_want_block_peer<const N: usize>(now: Instant) -> (Engine, [PeerId; N]) {
    let mut e = Engine::new(Limits {
        want_block_peers: 1,
        ..Limits::default()
    });
    let peers = std::array::from_fn(|_| peer());
    for p in peers {
        e.peer_connected(p, now);
    }
    (e, peers)
}

fn batches(e: &mut Engine) -> HashMap<PeerId, Batch> {
    let bs: HashMap<PeerId, Batch> = e.take_batches().into_iter().collect();
    for p in bs.keys() {
        e.batch_done(p, true);
    }
    bs
}

/// The next batch, which must be `peer`'s only.
fn batch(e: &mut Engine, peer: &PeerId) -> Batch {
    let mut bs = batches(e);
    let b = bs.remove(peer).expect("a batch for the peer");
    assert!(bs.is_empty(), "batches for other peers too");
    b
}

#[test]
fn serves_what_it_has() {
    let now = Instant::now();
    let mut e = Engine::new(Limits::default());
    let p = peer();
    let small = block(1);
    let big = Block::new(cid::Version::V1, RAW, vec![7; 5000]);
    let msg = wants(vec![
        (want_entry(&small, WantType::Have, true), Some(7)),
        (want_entry(&big, WantType::Have, true), Some(5000)),
        (want_entry(&big, WantType::Block, false), Some(5000)),
    ]);
    assert!(e.receive(p, msg, now).is_empty());
    let b = batch(&mut e, &p);
    // Small want-have: the block; the want-block of the large one wins
    // over its want-have.
    assert!(b.blocks.contains(&small.cid));
    assert!(b.blocks.contains(&big.cid));
    assert!(b.presences.is_empty());
    assert_eq!(e.remembered_len(), 0);

    let msg = wants(vec![(want_entry(&big, WantType::Have, true), Some(5000))]);
    e.receive(p, msg, now);
    let b = batch(&mut e, &p);
    assert_eq!(
        b.presences,
        vec![Presence {
            cid: big.cid,
            have: true
        }]
    );
    assert!(b.blocks.is_empty());
}

#[test]
fn remembers_missing_blocks_and_serves_them_on_arrival() {
    let now = Instant::now();
    let mut e = Engine::new(Limits::default());
    let (p, q) = (peer(), peer());
    let seg = block(1);
    let acts = e.receive(
        p,
        wants(vec![(want_entry(&seg, WantType::Block, true), None)]),
        now,
    );
    assert_eq!(acts, vec![Action::Recheck(vec![seg.cid])]);
    e.receive(
        q,
        wants(vec![(want_entry(&seg, WantType::Have, false), None)]),
        now,
    );
    assert_eq!(e.remembered_len(), 2);
    assert!(e.peer_wants(&p, &seg.cid));
    // p asked for DONT_HAVE, q did not.
    let mut bs = e.take_batches();
    bs.sort_by_key(|(id, _)| *id != p);
    assert_eq!(bs.len(), 1);
    assert_eq!(
        bs[0].1.presences,
        vec![Presence {
            cid: seg.cid,
            have: false
        }]
    );
    e.batch_done(&p, true);
    assert!(e.take_batches().is_empty());

    // The segment is stored: p gets the block, q (want-have of a
    // larger block) a HAVE; small blocks go inline.
    e.block_added(&seg.cid, 4000);
    assert_eq!(e.remembered_len(), 0);
    let mut all = batches(&mut e);
    assert_eq!(all.remove(&p).unwrap().blocks, vec![seg.cid]);
    let qb = all.remove(&q).unwrap();
    assert_eq!(
        qb.presences,
        vec![Presence {
            cid: seg.cid,
            have: true
        }]
    );
    // Served wants are not served twice.
    e.block_added(&seg.cid, 4000);
    assert!(e.take_batches().is_empty());
}

#[test]
fn cancels_and_full_wantlists_forget_wants() {
    let now = Instant::now();
    let mut e = Engine::new(Limits::default());
    let p = peer();
    let (a, b, c) = (block(1), block(2), block(3));
    e.receive(
        p,
        wants(vec![
            (want_entry(&a, WantType::Block, false), None),
            (want_entry(&b, WantType::Block, false), None),
            (want_entry(&c, WantType::Block, false), Some(10)),
        ]),
        now,
    );
    assert_eq!(e.remembered_len(), 2);
    // Cancel a; cancel c before its block went out.
    e.receive(
        p,
        wants(vec![
            (Entry::cancel(a.cid), None),
            (Entry::cancel(c.cid), None),
        ]),
        now,
    );
    assert_eq!(e.remembered_len(), 1);
    assert!(e.take_batches().is_empty());
    // A full wantlist without b forgets b.
    let mut msg = wants(vec![(want_entry(&a, WantType::Block, false), None)]);
    msg.full = true;
    e.receive(p, msg, now);
    assert!(!e.peer_wants(&p, &b.cid));
    assert!(e.peer_wants(&p, &a.cid));
    assert_eq!(e.remembered_len(), 1);
    e.peer_disconnected(&p, now);
    assert_eq!(e.remembered_len(), 0);
}

#[test]
fn peer_wants_are_bounded() {
    let now = Instant::now();
    let limits = Limits {
        max_peer_wants: 3,
        max_remembered_wants: 4,
        ..Limits::default()
    };
    let mut e = Engine::new(limits);
    let (p, q) = (peer(), peer());
    let many = |from: u32, sdh: bool| {
        wants(
            (from..from + 10)
                .map(|i| (want_entry(&block(i), WantType::Block, sdh), None))
                .collect(),
        )
    };
    e.receive(p, many(0, false), now);
    e.receive(q, many(100, false), now);
    // 3 for p, then only 1 more fits the total.
    assert_eq!(e.remembered_len(), 4);
    assert_eq!(e.counters().dropped_wants, 16);
    // Queued answers take slots too, until sent.
    e.receive(q, wants(vec![(Entry::cancel(block(100).cid), None)]), now);
    let r = PeerId::random();
    e.receive(r, many(200, true), now);
    assert_eq!(e.remembered_len(), 4);
    let b = batch(&mut e, &r);
    assert_eq!(b.presences.len(), 2);
}

#[test]
fn client_asks_few_peers_for_the_block_and_the_rest_whether_they_have_it() {
    let now = Instant::now();
    let mut e = Engine::new(Limits {
        want_block_peers: 2,
        ..Limits::default()
    });
    let peers: Vec<PeerId> = (0..4).map(|_| peer()).collect();
    for p in &peers {
        e.peer_connected(*p, now);
    }
    // Nothing to tell peers while we want nothing.
    assert!(e.take_batches().is_empty());
    let x = block(1);
    assert_eq!(
        e.want(x.cid, now).unwrap(),
        vec![Action::Recheck(vec![x.cid])]
    );
    // Shared.
    assert!(e.want(x.cid, now).unwrap().is_empty());
    let mut blocks = 0;
    let mut all = batches(&mut e);
    for p in &peers {
        let b = all.remove(p).unwrap();
        assert_eq!(b.wantlist.len(), 1);
        assert!(!b.wantlist[0].send_dont_have, "see Limits::ask_dont_have");
        if b.wantlist[0].want_type == WantType::Block {
            blocks += 1;
        }
    }
    assert_eq!(blocks, 2);
    // A peer that connects later gets the want in a full list.
    let late = peer();
    e.peer_connected(late, now);
    let b = batch(&mut e, &late);
    assert!(b.full);
    assert_eq!(b.wantlist[0].cid, x.cid);
    assert_eq!(b.wantlist[0].want_type, WantType::Have);
}

#[test]
fn have_and_dont_have_move_the_want_block() {
    let now = Instant::now();
    let (mut e, [a, b, c]) = one_want_block_peer(now);
    e.take_batches();
    for p in [a, b, c] {
        e.batch_done(&p, true);
    }
    let x = block(1);
    e.want(x.cid, now).unwrap();
    let first: Vec<(PeerId, Batch)> = e.take_batches();
    let block_peer = first
        .iter()
        .find(|(_, b)| b.wantlist[0].want_type == WantType::Block)
        .unwrap()
        .0;
    for (p, _) in &first {
        e.batch_done(p, true);
    }
    let others: Vec<PeerId> = [a, b, c].into_iter().filter(|p| *p != block_peer).collect();
    // Both others have it; one want-block is outstanding, so they wait.
    for p in &others {
        let msg = Incoming {
            presences: vec![Presence {
                cid: x.cid,
                have: true,
            }],
            ..Incoming::default()
        };
        e.receive(*p, msg, now);
    }
    assert!(e.take_batches().is_empty());
    // The block peer lacks it: the first HAVE gets the want-block.
    let msg = Incoming {
        presences: vec![Presence {
            cid: x.cid,
            have: false,
        }],
        ..Incoming::default()
    };
    e.receive(block_peer, msg, now);
    let b = batch(&mut e, &others[0]);
    assert_eq!(b.wantlist[0].want_type, WantType::Block);
    // It does not answer: after a while (here the floor: every peer
    // answered at once so far) the next HAVE is asked.
    e.tick(now + Duration::from_millis(900));
    assert!(e.take_batches().is_empty());
    e.tick(now + Duration::from_secs(1));
    let b = batch(&mut e, &others[1]);
    assert_eq!(b.wantlist[0].want_type, WantType::Block);
}

#[test]
fn received_blocks_are_stored_once_then_cancelled_everywhere() {
    let now = Instant::now();
    let mut e = Engine::new(Limits::default());
    let (a, b) = (peer(), peer());
    e.peer_connected(a, now);
    e.peer_connected(b, now);
    let x = block(1);
    e.want(x.cid, now).unwrap();
    assert_eq!(batches(&mut e).len(), 2);
    let msg = || Incoming {
        blocks: vec![x.clone()],
        ..Incoming::default()
    };
    assert_eq!(e.receive(a, msg(), now), vec![Action::Store(x.clone())]);
    // The same block from b while a's is being stored: a duplicate.
    assert!(e.receive(b, msg(), now).is_empty());
    assert_eq!(e.block_stored(&x.cid), Some(x.cid));
    assert_eq!(e.wants_len(), 0);
    let mut all = batches(&mut e);
    for p in [a, b] {
        assert_eq!(all.remove(&p).unwrap().wantlist, vec![Entry::cancel(x.cid)]);
    }
    // Arriving after the want is done: still a duplicate, no strike.
    assert!(e.receive(b, msg(), now).is_empty());
    assert_eq!(e.counters().duplicate_blocks, 2);
    assert_eq!(e.counters().rejected_blocks, 0);
}

#[test]
fn unwanted_blocks_are_rejected_and_repeat_offenders_ignored() {
    let now = Instant::now();
    let mut e = Engine::new(Limits {
        max_strikes: 3,
        ..Limits::default()
    });
    let p = peer();
    let wanted = block(1);
    e.want(wanted.cid, now).unwrap();
    e.peer_connected(p, now);
    // Bytes that do not hash to the wanted CID name another block.
    let forged = Block::new(cid::Version::V1, RAW, b"not the block".to_vec());
    let msg = Incoming {
        blocks: vec![forged.clone()],
        bad_blocks: 1,
        ..Incoming::default()
    };
    assert!(e.receive(p, msg, now).is_empty());
    assert_eq!(e.counters().rejected_blocks, 2);
    assert!(e.wants(&wanted.cid));
    assert!(!e.is_ignored(&p));
    let msg = Incoming {
        blocks: vec![forged],
        ..Incoming::default()
    };
    e.receive(p, msg, now);
    assert!(e.is_ignored(&p));
    // Even the real block is not taken from it now, nor its wants.
    let msg = Incoming {
        blocks: vec![wanted.clone()],
        wants: vec![(want_entry(&block(9), WantType::Block, true), None)],
        ..Incoming::default()
    };
    assert!(e.receive(p, msg, now).is_empty());
    assert_eq!(e.remembered_len(), 0);
    assert_eq!(e.peers().count(), 0);
}

#[test]
fn unanswered_wants_are_sent_again() {
    let now = Instant::now();
    let (mut e, [a, b, c]) = one_want_block_peer(now);
    let x = block(1);
    e.want(x.cid, now).unwrap();
    let first = batches(&mut e);
    let kind = |p: &PeerId| first[p].wantlist[0].want_type;
    let blk = *[a, b, c]
        .iter()
        .find(|p| kind(p) == WantType::Block)
        .unwrap();
    let others: Vec<PeerId> = [a, b, c].into_iter().filter(|p| *p != blk).collect();
    // One of the others lacks it; the rest stay silent (their answers
    // lost, say).
    let msg = Incoming {
        presences: vec![Presence {
            cid: x.cid,
            have: false,
        }],
        ..Incoming::default()
    };
    // It answered at once, but the others are not measured yet: they get
    // the first guess (4 x 500 ms).
    e.receive(others[0], msg, now);
    e.tick(now + Duration::from_millis(1900));
    assert!(e.take_batches().is_empty());
    e.tick(now + Duration::from_secs(2));
    let again = batches(&mut e);
    assert_eq!(again.len(), 2, "not the peer that said DONT_HAVE");
    assert_eq!(again[&blk].wantlist[0].want_type, WantType::Block);
    assert_eq!(again[&others[1]].wantlist[0].want_type, WantType::Have);
    // And again after another while, not before.
    e.tick(now + Duration::from_millis(3900));
    assert!(e.take_batches().is_empty());
    e.tick(now + Duration::from_secs(4));
    assert_eq!(batches(&mut e).len(), 2);
}

#[test]
fn patience_follows_how_fast_peers_answer() {
    let now = Instant::now();
    let mut e = Engine::new(Limits::default());
    let (fast, slow) = (peer(), peer());
    e.peer_connected(fast, now);
    e.peer_connected(slow, now);
    let answer = |e: &mut Engine, p: PeerId, b: &Block, after: u64| {
        let msg = Incoming {
            presences: vec![Presence {
                cid: b.cid,
                have: false,
            }],
            ..Incoming::default()
        };
        e.receive(p, msg, now + Duration::from_millis(after));
    };
    // The fast peer answers in 50 ms, the slow one in 3 s.
    let (x, y) = (block(1), block(2));
    e.want(x.cid, now).unwrap();
    answer(&mut e, fast, &x, 50);
    answer(&mut e, slow, &x, 3000);
    e.unwant(&x.cid);
    batches(&mut e);
    // A want only the fast peer has left to answer is re-sent after the
    // floor (1 s); one the slow peer has to answer waits the cap (5 s).
    e.want(y.cid, now).unwrap();
    batches(&mut e);
    answer(&mut e, slow, &y, 10);
    e.tick(now + Duration::from_millis(900));
    assert!(e.take_batches().is_empty());
    e.tick(now + Duration::from_millis(1100));
    assert_eq!(batches(&mut e).keys().collect::<Vec<_>>(), vec![&fast]);
    e.unwant(&y.cid);
    batches(&mut e);
    let z = block(3);
    e.want(z.cid, now).unwrap();
    batches(&mut e);
    answer(&mut e, fast, &z, 10);
    e.tick(now + Duration::from_millis(4900));
    assert!(e.take_batches().is_empty());
    e.tick(now + Duration::from_secs(5));
    assert_eq!(batches(&mut e).keys().collect::<Vec<_>>(), vec![&slow]);
}

#[test]
fn a_want_is_not_asked_again_while_its_answer_is_arriving() {
    let now = Instant::now();
    let at = |ms: u64| now + Duration::from_millis(ms);
    let (mut e, [a, b]) = one_want_block_peer(now);
    let x = block(1);
    e.want(x.cid, now).unwrap();
    let first = batches(&mut e);
    let blk = *[a, b]
        .iter()
        .find(|p| first[*p].wantlist[0].want_type == WantType::Block)
        .unwrap();
    let other = if blk == a { b } else { a };
    // A big message from the peer asked for the block keeps arriving
    // (every 200 ms) long past the first guess of patience (2 s)...
    for ms in (200..=4000).step_by(200) {
        e.arriving(&blk, at(ms));
        e.tick(at(ms + 100));
        assert!(e.take_batches().is_empty(), "asked again at {ms} ms");
    }
    // ...and bytes from a peer that was only asked whether it has the
    // block do not count.
    e.arriving(&other, at(5000));
    // Once it stops arriving, the want waits the usual patience again.
    e.tick(at(5900));
    assert!(e.take_batches().is_empty());
    e.tick(at(6000));
    assert_eq!(batches(&mut e).len(), 2);
    // A peer that never stops sending holds a want at most 30 s.
    for ms in (6200..36000).step_by(200) {
        e.arriving(&blk, at(ms));
        e.tick(at(ms + 100));
        assert!(e.take_batches().is_empty(), "asked again at {ms} ms");
    }
    e.arriving(&blk, at(36000));
    e.tick(at(36000));
    assert_eq!(batches(&mut e).len(), 2);
}

#[test]
fn a_block_arriving_after_its_want_was_given_up_is_no_strike() {
    let now = Instant::now();
    let mut e = Engine::new(Limits {
        max_strikes: 1,
        ..Limits::default()
    });
    let p = peer();
    e.peer_connected(p, now);
    let x = block(1);
    e.want(x.cid, now).unwrap();
    e.unwant(&x.cid);
    let msg = Incoming {
        blocks: vec![x],
        ..Incoming::default()
    };
    assert!(e.receive(p, msg, now).is_empty());
    assert_eq!(e.counters().duplicate_blocks, 1);
    assert!(!e.is_ignored(&p));
}

#[test]
fn blocks_put_by_others_resolve_our_wants() {
    let now = Instant::now();
    let mut e = Engine::new(Limits::default());
    let p = peer();
    e.peer_connected(p, now);
    let x = block(1);
    e.want(x.cid, now).unwrap();
    batch(&mut e, &p);
    assert_eq!(e.block_added(&x.cid, 7), vec![Action::Resolve(x.cid)]);
    assert_eq!(batch(&mut e, &p).wantlist, vec![Entry::cancel(x.cid)]);
    // While our own copy is being stored, the store's notice is not a
    // second resolution.
    let y = block(2);
    e.want(y.cid, now).unwrap();
    let msg = Incoming {
        blocks: vec![y.clone()],
        ..Incoming::default()
    };
    assert_eq!(e.receive(p, msg, now), vec![Action::Store(y.clone())]);
    assert!(e.block_added(&y.cid, 7).is_empty());
    assert_eq!(e.block_stored(&y.cid), Some(y.cid));
}

#[test]
fn our_wants_are_bounded_and_cancels_collapse_into_a_full_list() {
    let now = Instant::now();
    let mut e = Engine::new(Limits {
        max_wants: 2,
        ..Limits::default()
    });
    e.want(block(1).cid, now).unwrap();
    e.want(block(2).cid, now).unwrap();
    assert_eq!(e.want(block(3).cid, now), Err(2));
    e.unwant(&block(1).cid);
    e.want(block(3).cid, now).unwrap();

    // A peer that never takes its batches: churned wants do not pile
    // up as cancels.
    let p = peer();
    e.peer_connected(p, now);
    for i in 10..(10 + 2 * MAX_ENTRIES as u32) {
        let c = block(i).cid;
        e.unwant(&block(2).cid);
        e.want(c, now).unwrap();
        e.unwant(&c);
    }
    let b = batch(&mut e, &p);
    assert!(b.wantlist.len() <= MAX_ENTRIES + 2, "{}", b.wantlist.len());
}

#[test]
fn batches_hold_a_bounded_number_of_block_bytes_by_priority() {
    let now = Instant::now();
    let mut e = Engine::new(Limits {
        batch_bytes: 1000,
        ..Limits::default()
    });
    let p = peer();
    let blocks: Vec<Block> = (0..5).map(block).collect();
    let msg = wants(
        blocks
            .iter()
            .enumerate()
            .map(|(i, b)| {
                (
                    Entry::want(b.cid, i as i32, WantType::Block, false),
                    Some(400),
                )
            })
            .collect(),
    );
    e.receive(p, msg, now);
    let first = batch(&mut e, &p);
    assert_eq!(first.blocks, vec![blocks[4].cid, blocks[3].cid]);
    let second = batch(&mut e, &p);
    assert_eq!(second.blocks, vec![blocks[2].cid, blocks[1].cid]);
    assert_eq!(batch(&mut e, &p).blocks, vec![blocks[0].cid]);
    // Busy peers get no second batch until the first is done.
    let msg = wants(vec![(
        want_entry(&blocks[0], WantType::Block, false),
        Some(1),
    )]);
    e.receive(p, msg, now);
    assert_eq!(e.take_batches().len(), 1);
    let msg = wants(vec![(
        want_entry(&blocks[1], WantType::Block, false),
        Some(1),
    )]);
    e.receive(p, msg, now);
    assert!(e.take_batches().is_empty());
    e.batch_done(&p, true);
    assert_eq!(e.take_batches().len(), 1);
}

#[test]
fn a_lost_batch_resends_our_wantlist_in_full() {
    let now = Instant::now();
    let mut e = Engine::new(Limits::default());
    let p = peer();
    e.peer_connected(p, now);
    let x = block(1);
    e.want(x.cid, now).unwrap();
    let _lost = e.take_batches();
    e.batch_done(&p, false);
    let b = batch(&mut e, &p);
    assert!(b.full);
    assert_eq!(b.wantlist[0].cid, x.cid);
}

#[test]
fn disconnects_move_want_blocks_to_peers_that_have_the_block() {
    let now = Instant::now();
    let (mut e, [a, b]) = one_want_block_peer(now);
    let x = block(1);
    e.want(x.cid, now).unwrap();
    let bs = e.take_batches();
    let (blk, other) = if bs
        .iter()
        .any(|(p, bt)| *p == a && bt.wantlist[0].want_type == WantType::Block)
    {
        (a, b)
    } else {
        (b, a)
    };
    for (p, _) in bs {
        e.batch_done(&p, true);
    }
    let msg = Incoming {
        presences: vec![Presence {
            cid: x.cid,
            have: true,
        }],
        ..Incoming::default()
    };
    e.receive(other, msg, now);
    assert!(e.take_batches().is_empty());
    e.peer_disconnected(&blk, now);
    let bt = batch(&mut e, &other);
    assert_eq!(bt.wantlist[0].want_type, WantType::Block);
}

proptest::proptest! {
    /// Whatever peers send, the remembered count matches the ledgers and
    /// stays within the limits.
    #[test]
    fn remembered_wants_stay_bounded(
        ops in proptest::collection::vec((0u8..3, 0u32..40, 0u8..4, proptest::option::of(0u64..3000)), 0..200)
    ) {
        let now = Instant::now();
        let limits = Limits { max_peer_wants: 8, max_remembered_wants: 12, ..Limits::default() };
        let mut e = Engine::new(limits.clone());
        let peers: Vec<PeerId> = (0..3).map(|_| peer()).collect();
        for (pi, bi, kind, size) in ops {
            let p = peers[pi as usize];
            let b = block(bi);
            match kind {
                0 => { e.receive(p, wants(vec![(want_entry(&b, WantType::Block, true), size)]), now); }
                1 => { e.receive(p, wants(vec![(Entry::cancel(b.cid), None)]), now); }
                2 => { e.block_added(&b.cid, size.unwrap_or(10)); }
                _ => {
                    let taken = e.take_batches();
                    for (id, _) in taken { e.batch_done(&id, true); }
                }
            }
            let total: usize = e.peers.values().map(|p| p.ledger.len()).sum();
            proptest::prop_assert_eq!(total, e.remembered_len());
            proptest::prop_assert!(total <= limits.max_remembered_wants);
            for p in e.peers.values() {
                proptest::prop_assert!(p.ledger.len() + p.outbox.served() <= limits.max_peer_wants);
            }
        }
    }
}
