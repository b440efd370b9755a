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
        if opts.hamt_threshold == 0 {
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
