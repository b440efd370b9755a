//! Directory nodes: a basic UnixFS directory, or a HAMT-sharded one once the
//! directory's estimated size passes the threshold.
//!
//! kubo builds directories incrementally in MFS and switches a directory to
//! a HAMT when an added link pushes the estimate over the threshold. During
//! an import links are only added (a child directory's link is replaced by a
//! bigger one), so the estimate only grows and the result depends on the
//! final set of entries alone: that is what [`DirectoryBuilder`] decides on.

use std::collections::BTreeMap;

use cid::Cid;

use super::{ImportError, ImportOptions, Imported, SizeEstimation};
use crate::store::{Block, BlockSink, DAG_PB};
use crate::unixfs::hamt::{self, HamtError};
use crate::unixfs::pb::{DataType, PbLink, PbNode, UnixfsData};

/// One entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name.
    pub name: String,
    /// The root CID of the entry's DAG.
    pub cid: Cid,
    /// The cumulative size of the entry's DAG (the link's Tsize).
    pub size: u64,
}

/// Collects a directory's entries, then emits its blocks.
#[derive(Debug, Clone, Default)]
pub struct DirectoryBuilder {
    /// Keyed by name; `String`'s order is byte order, the order kubo sorts
    /// dag-pb links in.
    entries: BTreeMap<String, (Cid, u64)>,
}

impl DirectoryBuilder {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry; names must be unique and valid path segments.
    pub fn add(&mut self, name: impl Into<String>, cid: Cid, size: u64) -> Result<(), ImportError> {
        let name = name.into();
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return Err(ImportError::BadEntryName(name));
        }
        if self.entries.contains_key(&name) {
            return Err(ImportError::DuplicateEntry(name));
        }
        self.entries.insert(name, (cid, size));
        Ok(())
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the directory has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, sorted by name.
    pub fn entries(&self) -> impl Iterator<Item = DirEntry> + '_ {
        self.entries.iter().map(|(name, (cid, size))| DirEntry {
            name: name.clone(),
            cid: *cid,
            size: *size,
        })
    }

    /// Whether [`Self::finish`] will shard this directory under `opts`.
    pub fn will_shard(&self, opts: &ImportOptions) -> bool {
        // kubo and Helia decide when an entry is added, so an empty directory
        // stays basic whatever the threshold.
        if opts.hamt_threshold == 0 || self.entries.is_empty() {
            return false;
        }
        let estimate = match opts.hamt_estimation {
            SizeEstimation::LinkBytes => self
                .entries
                .iter()
                .map(|(name, (cid, _))| name.len() + cid.encoded_len())
                .sum(),
            SizeEstimation::BlockBytes => self.basic_node().encoded_len(),
        };
        estimate > opts.hamt_threshold
            || (opts.hamt_shard_at_threshold && estimate == opts.hamt_threshold)
    }

    /// Entry names in the order kubo lists this directory once built: by
    /// name for a basic directory, by name hash (trie order) for a HAMT.
    pub fn listing_order(&self, opts: &ImportOptions) -> Vec<&str> {
        let mut names: Vec<&str> = self.entries.keys().map(String::as_str).collect();
        if self.will_shard(opts) {
            names.sort_by_cached_key(|n| hamt::name_hash(n.as_bytes()));
        }
        names
    }

    /// Emits the directory's blocks (child shards before their parents) and
    /// returns the root.
    pub fn finish(
        self,
        opts: &ImportOptions,
        sink: &mut dyn BlockSink,
    ) -> Result<Imported, ImportError> {
        if self.will_shard(opts) {
            return self.finish_hamt(opts, sink);
        }
        let children_size = self.entries.values().map(|(_, s)| *s).sum::<u64>();
        emit(opts, sink, self.basic_node().encode(), children_size)
    }

    fn basic_node(&self) -> PbNode {
        PbNode {
            links: self
                .entries
                .iter()
                .map(|(name, (cid, size))| PbLink {
                    hash: cid.to_bytes(),
                    name: Some(name.clone()),
                    tsize: Some(*size),
                })
                .collect(),
            data: Some(UnixfsData::new(DataType::Directory).encode()),
        }
    }

    fn finish_hamt(
        self,
        opts: &ImportOptions,
        sink: &mut dyn BlockSink,
    ) -> Result<Imported, ImportError> {
        let bits = hamt::fanout_bits(opts.hamt_fanout)?;
        let mut items: Vec<Item<'_>> = self
            .entries
            .iter()
            .map(|(name, (cid, size))| Item {
                hash: u64::from_be_bytes(hamt::name_hash(name.as_bytes())),
                name,
                cid,
                size: *size,
            })
            .collect();
        // Sorted by hash, the names that share a slot at any depth are
        // contiguous, and slots come in increasing order.
        items.sort_by_key(|i| i.hash);
        let shard = Shard { opts, bits };
        shard.build(&items, 0, sink)
    }
}

struct Item<'a> {
    hash: u64,
    name: &'a str,
    cid: &'a Cid,
    size: u64,
}

struct Shard<'o> {
    opts: &'o ImportOptions,
    bits: u32,
}

impl Shard<'_> {
    /// Emits the shard node for `items`, all of which share the slots of the
    /// levels above `depth`.
    fn build(
        &self,
        items: &[Item<'_>],
        depth: u32,
        sink: &mut dyn BlockSink,
    ) -> Result<Imported, ImportError> {
        let fanout = self.opts.hamt_fanout;
        let slot_of = |item: &Item<'_>| {
            hamt::slot_at(item.hash, depth, self.bits).ok_or_else(|| {
                let other = items.iter().find(|o| o.name != item.name).unwrap_or(item);
                HamtError::TooDeep(item.name.to_owned(), other.name.to_owned())
            })
        };
        let mut links = Vec::new();
        let mut occupied = Vec::new();
        let mut children_size = 0u64;
        let mut i = 0;
        while i < items.len() {
            let slot = slot_of(&items[i])?;
            let mut j = i + 1;
            while j < items.len() && slot_of(&items[j])? == slot {
                j += 1;
            }
            let prefix = hamt::link_prefix(slot, fanout);
            let link = if j - i == 1 {
                let item = &items[i];
                PbLink {
                    hash: item.cid.to_bytes(),
                    name: Some(prefix + item.name),
                    tsize: Some(item.size),
                }
            } else {
                let child = self.build(&items[i..j], depth + 1, sink)?;
                PbLink {
                    hash: child.cid.to_bytes(),
                    name: Some(prefix),
                    tsize: Some(child.dag_size),
                }
            };
            children_size += link.tsize.unwrap_or(0);
            links.push(link);
            occupied.push(slot);
            i = j;
        }
        let mut data = UnixfsData::new(DataType::HamtShard);
        let bitfield = hamt::encode_bitfield(occupied, fanout);
        // go-bitfield returns nil for an empty bitfield, which gogo-protobuf
        // leaves out.
        data.data = (!bitfield.is_empty()).then_some(bitfield);
        data.hash_type = Some(hamt::MURMUR3_X64_64);
        data.fanout = Some(fanout);
        let node = PbNode {
            links,
            data: Some(data.encode()),
        };
        emit(self.opts, sink, node.encode(), children_size)
    }
}

/// Hashes a directory or shard node, hands it to the sink, returns its root.
fn emit(
    opts: &ImportOptions,
    sink: &mut dyn BlockSink,
    bytes: Vec<u8>,
    children_size: u64,
) -> Result<Imported, ImportError> {
    let block = Block::new(opts.cid_version, DAG_PB, bytes);
    let imported = Imported {
        cid: block.cid,
        file_size: 0,
        dag_size: block.data.len() as u64 + children_size,
    };
    sink.put_block(block)?;
    Ok(imported)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unixfs::import::{FileImporter, Profile};
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn file(opts: &ImportOptions, data: &[u8]) -> Imported {
        let mut sink = crate::store::Discard;
        let mut f = FileImporter::new(opts, &mut sink).unwrap();
        f.write(data).unwrap();
        f.finish().unwrap()
    }

    /// `n` files named `fNNNNN` padded with `x` to 30 bytes (the first
    /// `longer` names to 31), holding their index in decimal: the fixture
    /// used to find the sharding threshold of kubo and Helia.
    fn threshold_dir(opts: &ImportOptions, n: usize, longer: usize) -> DirectoryBuilder {
        let mut dir = DirectoryBuilder::new();
        for i in 0..n {
            let width = if i < longer { 31 } else { 30 };
            let name = format!("{:x<width$}", format!("f{i:05}"));
            let f = file(opts, i.to_string().as_bytes());
            dir.add(name, f.cid, f.dag_size).unwrap();
        }
        dir
    }

    fn build(dir: DirectoryBuilder, opts: &ImportOptions) -> (Imported, Vec<Block>) {
        let mut blocks = Vec::new();
        let root = dir.finish(opts, &mut blocks).unwrap();
        (root, blocks)
    }

    #[test]
    fn empty_directory_is_the_well_known_one() {
        let v0 = ImportOptions::default();
        let (root, _) = build(DirectoryBuilder::new(), &v0);
        assert_eq!(
            root.cid.to_string(),
            "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
        );
        assert_eq!(root.dag_size, 4);
        let v1 = ImportOptions::from_profile(Profile::UnixfsV1_2025);
        let (root, _) = build(DirectoryBuilder::new(), &v1);
        assert_eq!(
            root.cid.to_string(),
            "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"
        );
    }

    #[test]
    fn links_are_sorted_by_name_bytes() {
        let opts = ImportOptions::default();
        let f = file(&opts, b"x");
        let mut dir = DirectoryBuilder::new();
        for name in ["b", "B", "a", "ä", "a.txt", "_"] {
            dir.add(name, f.cid, f.dag_size).unwrap();
        }
        let (_, blocks) = build(dir, &opts);
        let node = PbNode::decode(&blocks[0].data).unwrap();
        let names: Vec<_> = node.links.iter().map(|l| l.name.clone().unwrap()).collect();
        assert_eq!(names, ["B", "_", "a", "a.txt", "b", "ä"]);
    }

    #[test]
    fn rejects_bad_and_duplicate_names() {
        let f = file(&ImportOptions::default(), b"x");
        let mut dir = DirectoryBuilder::new();
        for bad in ["", ".", "..", "a/b"] {
            assert!(matches!(
                dir.add(bad, f.cid, 1),
                Err(ImportError::BadEntryName(_))
            ));
        }
        dir.add("a", f.cid, 1).unwrap();
        assert!(matches!(
            dir.add("a", f.cid, 1),
            Err(ImportError::DuplicateEntry(_))
        ));
    }

    /// links-bytes of 4096 names of 30 bytes with CIDv0 links: exactly
    /// 262144. kubo 0.22 shards it (`>=`); IPIP-0499 and Helia's
    /// `unixfs-v0-2015` keep it basic. One byte more shards everywhere.
    #[test]
    fn links_bytes_threshold_matches_kubo_and_helia() {
        let kubo = ImportOptions::default();
        let profile = ImportOptions::from_profile(Profile::UnixfsV0_2015);
        let at = threshold_dir(&kubo, 4096, 0);
        assert!(at.will_shard(&kubo));
        assert!(!at.will_shard(&profile));
        let (root, blocks) = build(at.clone(), &kubo);
        assert_eq!(
            root.cid.to_string(),
            "QmdBQiPbSdwCHUif6DCuPHgct1bUJGtKADNchVAJJUAfoW"
        );
        assert_eq!(root.dag_size, 383225);
        assert!(blocks.len() > 1, "sub-shards");
        let (root, blocks) = build(at, &profile);
        assert_eq!(
            root.cid.to_string(),
            "QmSAfEe6zQajAeMAoYn1AzgiwDbjHCxP7xSXPPRsPkw3PT"
        );
        assert_eq!((root.dag_size, blocks.len()), (342958, 1));
        let over = threshold_dir(&kubo, 4096, 1);
        let (root, _) = build(over.clone(), &kubo);
        assert_eq!(
            root.cid.to_string(),
            "Qmf7PBRPt3KYGdLF3qTLdeD9jFeXxkwDrr9oeJirmu8mXD"
        );
        assert_eq!(root.dag_size, 383226);
        assert_eq!(build(over, &profile).0, root);
    }

    /// block-bytes: 3542 links of 74 bytes (+32 one byte longer) plus the
    /// 4-byte Data field make a block of exactly 262144 bytes, which stays
    /// basic; one more byte shards. CIDs from Helia `unixfs-v1-2025`.
    #[test]
    fn block_bytes_threshold_matches_helia() {
        let opts = ImportOptions::from_profile(Profile::UnixfsV1_2025);
        let at = threshold_dir(&opts, 3542, 32);
        assert_eq!(at.basic_node().encoded_len(), 262144);
        let (root, blocks) = build(at, &opts);
        assert_eq!(
            root.cid.to_string(),
            "bafybeib75mevj5gnnm74zwbk5ol5ogi5sprxi3jbfngk57bvashskhksea"
        );
        assert_eq!((root.dag_size, blocks.len()), (275202, 1));
        let (root, blocks) = build(threshold_dir(&opts, 3542, 33), &opts);
        assert_eq!(
            root.cid.to_string(),
            "bafybeiet6ognopavnvvkmyleudyrbt23qiiikfleghkp5i52rydebzmkia"
        );
        assert_eq!(root.dag_size, 313115);
        assert!(blocks.len() > 1);
    }

    /// Helia (`unixfs-v1-2025`, `shardSplitThresholdBytes: 1`): every
    /// directory with an entry is sharded, an empty one is not.
    #[test]
    fn tiny_threshold_shards_all_but_empty_directories() {
        let opts = ImportOptions {
            hamt_threshold: 1,
            ..ImportOptions::from_profile(Profile::UnixfsV1_2025)
        };
        assert!(!DirectoryBuilder::new().will_shard(&opts));
        let mut dir = DirectoryBuilder::new();
        let f = file(&opts, b"x\n");
        dir.add("x.txt", f.cid, f.dag_size).unwrap();
        let (empty, _) = build(DirectoryBuilder::new(), &opts);
        dir.add("empty", empty.cid, empty.dag_size).unwrap();
        let (root, blocks) = build(dir, &opts);
        let node = PbNode::decode(&blocks[0].data).unwrap();
        let fs = UnixfsData::decode(node.data.as_deref().unwrap()).unwrap();
        assert_eq!(fs.kind, DataType::HamtShard);
        assert_eq!(root.dag_size, 2 + 4 + node.encoded_len() as u64);
    }

    #[test]
    fn threshold_zero_never_shards() {
        let opts = ImportOptions {
            hamt_threshold: 0,
            ..ImportOptions::default()
        };
        let dir = threshold_dir(&opts, 4096, 1);
        assert!(!dir.will_shard(&opts));
        let (_, blocks) = build(dir, &opts);
        assert_eq!(blocks.len(), 1);
    }

    /// Finds `name` by following its hash through the shards, checking each
    /// node on the way; returns the entry's (cid, tsize).
    fn lookup(
        name: &str,
        root: &Cid,
        blocks: &HashMap<Cid, Block>,
        fanout: u64,
    ) -> Option<(Cid, u64)> {
        let bits = hamt::fanout_bits(fanout).unwrap();
        let mut hb = hamt::HashBits::new(name.as_bytes());
        let mut cid = *root;
        loop {
            let node = PbNode::decode(&blocks[&cid].data).unwrap();
            let fs = UnixfsData::decode(node.data.as_deref().unwrap()).unwrap();
            assert_eq!(fs.kind, DataType::HamtShard);
            assert_eq!(
                (fs.fanout, fs.hash_type),
                (Some(fanout), Some(hamt::MURMUR3_X64_64))
            );
            let bitfield = fs.data.unwrap_or_default();
            let set = (0..fanout as usize)
                .filter(|&i| hamt::bitfield_has(&bitfield, i))
                .count();
            assert_eq!(set, node.links.len());
            let slot = hb.next(bits)?;
            if !hamt::bitfield_has(&bitfield, slot) {
                return None;
            }
            let prefix = hamt::link_prefix(slot, fanout);
            let link = node
                .links
                .iter()
                .find(|l| l.name.as_deref().unwrap().starts_with(&prefix))?;
            let child = Cid::try_from(link.hash.as_slice()).unwrap();
            let link_name = link.name.as_deref().unwrap();
            if link_name.len() == prefix.len() {
                cid = child;
                continue;
            }
            return (&link_name[prefix.len()..] == name).then_some((child, link.tsize.unwrap()));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn every_entry_is_found_in_the_hamt(
            names in proptest::collection::btree_set("[a-zA-Z0-9._-]{1,24}", 1..600),
            fanout_bits in 3u32..=10,
        ) {
            let fanout = 1u64 << fanout_bits;
            let opts = ImportOptions {
                hamt_threshold: 1,
                hamt_fanout: fanout,
                ..ImportOptions::default()
            };
            let mut dir = DirectoryBuilder::new();
            let mut want = HashMap::new();
            for (i, name) in names.iter().enumerate() {
                if name == "." || name == ".." {
                    continue;
                }
                let f = file(&opts, name.as_bytes());
                dir.add(name.clone(), f.cid, f.dag_size + i as u64).unwrap();
                want.insert(name.clone(), (f.cid, f.dag_size + i as u64));
            }
            let order = dir.listing_order(&opts).into_iter().map(str::to_owned).collect::<Vec<_>>();
            let (root, blocks) = build(dir, &opts);
            let total: u64 = blocks.iter().map(|b| b.data.len() as u64).sum::<u64>()
                + want.values().map(|v| v.1).sum::<u64>();
            prop_assert_eq!(root.dag_size, total);
            prop_assert_eq!(blocks.last().unwrap().cid, root.cid);
            let by_cid: HashMap<Cid, Block> = blocks.into_iter().map(|b| (b.cid, b)).collect();
            for (name, entry) in &want {
                prop_assert_eq!(lookup(name, &root.cid, &by_cid, fanout), Some(*entry));
            }
            prop_assert_eq!(lookup("not-there/", &root.cid, &by_cid, fanout), None);
            // The listing order is the trie order: hashes ascending.
            let hashes: Vec<_> = order.iter().map(|n| hamt::name_hash(n.as_bytes())).collect();
            prop_assert!(hashes.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
