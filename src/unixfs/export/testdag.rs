//! Hand-built UnixFS DAGs for tests, written without the importer so the
//! exporter and gateway are tested against the spec, not against our own
//! importer's habits.

use crate::store::{Block, BlockRead, Blockstore, MemStore, DAG_PB, RAW};
use crate::unixfs::hamt;
use crate::unixfs::pb::{DataType, PbLink, PbNode, UnixfsData};
use cid::Cid;
use std::sync::Arc;

/// A memory store and helpers that put nodes into it.
pub(crate) struct TestDag {
    pub store: Arc<MemStore>,
}

fn link(cid: &Cid, name: &str, tsize: u64) -> PbLink {
    PbLink {
        hash: cid.to_bytes(),
        name: Some(name.to_owned()),
        tsize: Some(tsize),
    }
}

impl TestDag {
    pub fn new() -> Self {
        Self {
            store: Arc::new(MemStore::new()),
        }
    }

    pub fn put(&self, b: Block) -> Cid {
        self.store.put(&b).unwrap();
        b.cid
    }

    fn pb(&self, links: Vec<PbLink>, data: UnixfsData) -> Cid {
        self.put(Block::new(
            cid::Version::V1,
            DAG_PB,
            PbNode {
                links,
                data: Some(data.encode()),
            }
            .encode(),
        ))
    }

    /// The DAG size below `cid` as a parent's `Tsize` records it.
    fn tsize(&self, cid: &Cid) -> u64 {
        let data = self.store.get(cid).unwrap().unwrap_or_default();
        let below: u64 = PbNode::decode(&data)
            .map(|n| n.links.iter().map(|l| l.tsize.unwrap_or(0)).sum())
            .unwrap_or(0);
        data.len() as u64 + if cid.codec() == DAG_PB { below } else { 0 }
    }

    pub fn raw(&self, data: &[u8]) -> Cid {
        self.put(Block::new(cid::Version::V1, RAW, data.to_vec()))
    }

    /// A dag-pb file leaf holding `data` inline.
    pub fn pb_leaf(&self, data: &[u8]) -> Cid {
        let mut d = UnixfsData::new(DataType::File);
        d.data = Some(data.to_vec());
        d.filesize = Some(data.len() as u64);
        self.pb(Vec::new(), d)
    }

    /// A file node over `children` (CID, content bytes), with optional
    /// inline bytes before them.
    pub fn file(&self, inline: &[u8], children: &[(Cid, u64)]) -> Cid {
        let mut d = UnixfsData::new(DataType::File);
        if !inline.is_empty() {
            d.data = Some(inline.to_vec());
        }
        d.blocksizes = children.iter().map(|c| c.1).collect();
        d.filesize = Some(inline.len() as u64 + d.blocksizes.iter().sum::<u64>());
        let links = children
            .iter()
            .map(|(c, _)| link(c, "", self.tsize(c)))
            .collect();
        self.pb(links, d)
    }

    /// A balanced file of raw leaves of `chunk` bytes, `fanout` links a node.
    pub fn chunked(&self, data: &[u8], chunk: usize, fanout: usize) -> Cid {
        let mut level: Vec<(Cid, u64)> = data
            .chunks(chunk)
            .map(|c| (self.raw(c), c.len() as u64))
            .collect();
        if level.len() == 1 {
            return level[0].0;
        }
        while level.len() > 1 {
            level = level
                .chunks(fanout)
                .map(|kids| (self.file(b"", kids), kids.iter().map(|k| k.1).sum()))
                .collect();
        }
        level[0].0
    }

    pub fn dir(&self, entries: &[(&str, Cid)]) -> Cid {
        let mut sorted = entries.to_vec();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        let links = sorted
            .iter()
            .map(|(n, c)| link(c, n, self.tsize(c)))
            .collect();
        self.pb(links, UnixfsData::new(DataType::Directory))
    }

    pub fn symlink(&self, target: &str) -> Cid {
        let mut d = UnixfsData::new(DataType::Symlink);
        d.data = Some(target.as_bytes().to_vec());
        self.pb(Vec::new(), d)
    }

    /// A HAMT-sharded directory laid out with [`hamt::name_hash`].
    pub fn hamt(&self, entries: &[(&str, Cid)], fanout: u64) -> Cid {
        let hashed: Vec<(u64, &str, Cid)> = entries
            .iter()
            .map(|(n, c)| (u64::from_be_bytes(hamt::name_hash(n.as_bytes())), *n, *c))
            .collect();
        self.shard(&hashed, fanout, 0, |_, b| b)
    }

    /// A HAMT whose entries sit in buckets of `bucket_of` (to test layouts
    /// the hash would not produce).
    pub fn shard(
        &self,
        entries: &[(u64, &str, Cid)],
        fanout: u64,
        depth: u32,
        bucket_of: fn(&str, u64) -> u64,
    ) -> Cid {
        let bits = fanout.trailing_zeros();
        let width = format!("{:X}", fanout - 1).len();
        let mut buckets = std::collections::BTreeMap::<u64, Vec<(u64, &str, Cid)>>::new();
        for &(h, n, c) in entries {
            let b = bucket_of(n, (h << (depth * bits)) >> (64 - bits));
            buckets.entry(b).or_default().push((h, n, c));
        }
        let mut bitfield = vec![0u8; (fanout as usize).div_ceil(8)];
        let mut links = Vec::new();
        for (b, group) in buckets {
            let i = bitfield.len() - 1 - (b as usize / 8);
            bitfield[i] |= 1 << (b % 8);
            let prefix = format!("{b:0width$X}");
            if let [(_, n, c)] = group[..] {
                links.push(link(&c, &format!("{prefix}{n}"), self.tsize(&c)));
            } else {
                let sub = self.shard(&group, fanout, depth + 1, bucket_of);
                links.push(link(&sub, &prefix, self.tsize(&sub)));
            }
        }
        let mut d = UnixfsData::new(DataType::HamtShard);
        d.data = Some(bitfield);
        d.hash_type = Some(hamt::MURMUR3_X64_64);
        d.fanout = Some(fanout);
        self.pb(links, d)
    }
}
