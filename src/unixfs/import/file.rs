//! Streaming file import: fixed-size chunks laid out as kubo's balanced DAG.
//!
//! Bytes fill a chunk buffer; each full chunk becomes a leaf (a raw block, or
//! a UnixFS File node holding the chunk), is hashed and handed to the sink at
//! once. Leaf links collect in `levels[0]`; a level that already holds
//! `max_links` links is turned into a File node (with `filesize` and
//! `blocksizes`) only when one more link arrives, because until then it may
//! still be the root. This yields boxo's `balanced` layout: every leaf at the
//! same depth, nodes filled left to right, a one-chunk file is its own leaf.

use std::io::Read;
use std::path::Path;

use bytes::{Buf, Bytes, BytesMut};
use cid::Cid;

use super::{ImportError, ImportOptions, Imported};
use crate::store::{Block, BlockSink, DAG_PB, RAW};
use crate::unixfs::pb::{put_varint, varint_len, DataType, PbLink, PbNode, UnixfsData};

/// Bytes reserved in front of a chunk for the dag-pb and UnixFS header of a
/// wrapped leaf, so the chunk never has to be copied into the node: tag and
/// length of `PBNode.Data` (1 + up to 5), type field (2), tag and length of
/// `Data.Data` (1 + up to 5).
const HEADROOM: usize = 16;
/// Room after a chunk for the `filesize` field of a wrapped leaf.
const TAILROOM: usize = 1 + 10;

/// A link to a finished child: a leaf or an internal node.
#[derive(Debug, Clone)]
struct Child {
    cid: Cid,
    /// Cumulative size of the child DAG (the link's Tsize).
    tsize: u64,
    /// File bytes under the child (its entry in `blocksizes`).
    file_size: u64,
}

/// Builds one file's DAG from bytes fed in slices of any size.
///
/// Every block goes to the sink as soon as it is complete; the importer holds
/// one chunk and at most `max_links` links per tree level.
pub struct FileImporter<'a> {
    sink: &'a mut dyn BlockSink,
    version: cid::Version,
    raw_leaves: bool,
    chunk_size: usize,
    max_links: usize,
    /// The chunk being filled, allocated at full size: `head` reserved bytes,
    /// then `filled` bytes of data, then zeroes.
    chunk: BytesMut,
    head: usize,
    filled: usize,
    levels: Vec<Vec<Child>>,
    file_size: u64,
}

impl<'a> FileImporter<'a> {
    /// An importer for one file with `opts`' chunking and layout parameters.
    pub fn new(opts: &ImportOptions, sink: &'a mut dyn BlockSink) -> Result<Self, ImportError> {
        opts.validate()?;
        Ok(Self {
            sink,
            version: opts.cid_version,
            raw_leaves: opts.raw_leaves,
            chunk_size: opts.chunk_size,
            max_links: opts.max_links,
            chunk: BytesMut::new(),
            head: if opts.raw_leaves { 0 } else { HEADROOM },
            filled: 0,
            levels: Vec::new(),
            file_size: 0,
        })
    }

    /// File bytes taken so far.
    pub fn bytes_written(&self) -> u64 {
        self.file_size
    }

    /// Feeds the next bytes of the file.
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), ImportError> {
        while !data.is_empty() {
            let room = self.room();
            let n = room.len().min(data.len());
            room[..n].copy_from_slice(&data[..n]);
            data = &data[n..];
            self.advance(n)?;
        }
        Ok(())
    }

    /// Reads `reader` to its end straight into chunk buffers (no copy between
    /// the read and the block), calling `on_progress` with the byte count of
    /// each read. `source` names the input in errors. Returns the bytes read.
    pub fn read_from(
        &mut self,
        reader: &mut dyn Read,
        source: &Path,
        on_progress: &mut dyn FnMut(u64),
    ) -> Result<u64, ImportError> {
        let mut total = 0u64;
        loop {
            match reader.read(self.room()) {
                Ok(0) => return Ok(total),
                Ok(n) => {
                    total += n as u64;
                    on_progress(n as u64);
                    self.advance(n)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source_err) => {
                    return Err(ImportError::Read {
                        path: source.to_path_buf(),
                        source: source_err,
                    })
                }
            }
        }
    }

    /// Ends the file: emits the last leaf and the internal nodes, and returns
    /// the root.
    pub fn finish(mut self) -> Result<Imported, ImportError> {
        if self.filled > 0 {
            self.flush_leaf()?;
        }
        if self.levels.is_empty() {
            return self.empty_file();
        }
        let mut level = 0;
        let root = loop {
            let top = level + 1 == self.levels.len();
            if top && self.levels[level].len() == 1 {
                break self.levels[level].pop().expect("one link");
            }
            let children = std::mem::take(&mut self.levels[level]);
            let node = self.emit_node(&children)?;
            if top {
                break node;
            }
            self.push(level + 1, node)?;
            level += 1;
        };
        Ok(Imported {
            cid: root.cid,
            file_size: self.file_size,
            dag_size: root.tsize,
        })
    }

    /// The unfilled part of the current chunk, allocating the chunk if needed.
    fn room(&mut self) -> &mut [u8] {
        if self.chunk.is_empty() {
            // Zeroed once per chunk: safe code cannot read into uninitialised
            // memory, and one memset costs far less than hashing the chunk.
            let tail = if self.raw_leaves { 0 } else { TAILROOM };
            self.chunk = BytesMut::zeroed(self.head + self.chunk_size + tail);
        }
        let start = self.head + self.filled;
        &mut self.chunk[start..self.head + self.chunk_size]
    }

    /// Accounts for `n` bytes placed in [`Self::room`]; emits a full chunk.
    fn advance(&mut self, n: usize) -> Result<(), ImportError> {
        self.filled += n;
        self.file_size += n as u64;
        if self.filled == self.chunk_size {
            self.flush_leaf()?;
        }
        Ok(())
    }

    /// Turns the buffered chunk into a leaf block and links it.
    fn flush_leaf(&mut self) -> Result<(), ImportError> {
        let n = self.filled;
        let mut buf = std::mem::take(&mut self.chunk);
        self.filled = 0;
        let block = if self.raw_leaves {
            buf.truncate(n);
            Block::new(self.version, RAW, buf.freeze())
        } else {
            // PBNode{Data: Data{Type: File, Data: chunk, filesize: n}}, written
            // around the chunk in place.
            let len = n as u64;
            let inner = 2 + 1 + varint_len(len) + n + 1 + varint_len(len);
            let mut header = Vec::with_capacity(HEADROOM);
            header.push(0x0a);
            put_varint(&mut header, inner as u64);
            header.extend_from_slice(&[0x08, DataType::File as u8, 0x12]);
            put_varint(&mut header, len);
            let start = HEADROOM - header.len();
            buf[start..HEADROOM].copy_from_slice(&header);
            buf.truncate(HEADROOM + n);
            let mut trailer = Vec::with_capacity(TAILROOM);
            trailer.push(0x18);
            put_varint(&mut trailer, len);
            buf.extend_from_slice(&trailer);
            buf.advance(start);
            Block::new(self.version, DAG_PB, buf.freeze())
        };
        let child = Child {
            cid: block.cid,
            tsize: block.data.len() as u64,
            file_size: n as u64,
        };
        self.sink.put_block(block)?;
        self.push(0, child)
    }

    /// Appends a link at `level`, first closing the level into a node one
    /// level up if it is full.
    fn push(&mut self, level: usize, child: Child) -> Result<(), ImportError> {
        if self.levels.len() == level {
            self.levels.push(Vec::with_capacity(self.max_links));
        }
        if self.levels[level].len() == self.max_links {
            let children =
                std::mem::replace(&mut self.levels[level], Vec::with_capacity(self.max_links));
            let parent = self.emit_node(&children)?;
            self.push(level + 1, parent)?;
        }
        self.levels[level].push(child);
        Ok(())
    }

    /// Emits an internal File node over `children`.
    fn emit_node(&mut self, children: &[Child]) -> Result<Child, ImportError> {
        let mut data = UnixfsData::new(DataType::File);
        data.filesize = Some(children.iter().map(|c| c.file_size).sum());
        data.blocksizes = children.iter().map(|c| c.file_size).collect();
        let node = PbNode {
            links: children
                .iter()
                .map(|c| PbLink {
                    hash: c.cid.to_bytes(),
                    name: Some(String::new()),
                    tsize: Some(c.tsize),
                })
                .collect(),
            data: Some(data.encode()),
        };
        let block = Block::new(self.version, DAG_PB, node.encode());
        let child = Child {
            cid: block.cid,
            tsize: block.data.len() as u64 + children.iter().map(|c| c.tsize).sum::<u64>(),
            file_size: data.filesize.unwrap_or(0),
        };
        self.sink.put_block(block)?;
        Ok(child)
    }

    /// kubo's empty file: an empty raw block, or a File node of size 0.
    fn empty_file(self) -> Result<Imported, ImportError> {
        let block = if self.raw_leaves {
            Block::new(self.version, RAW, Bytes::new())
        } else {
            let mut data = UnixfsData::new(DataType::File);
            data.filesize = Some(0);
            let node = PbNode {
                links: Vec::new(),
                data: Some(data.encode()),
            };
            Block::new(self.version, DAG_PB, node.encode())
        };
        let imported = Imported {
            cid: block.cid,
            file_size: 0,
            dag_size: block.data.len() as u64,
        };
        self.sink.put_block(block)?;
        Ok(imported)
    }
}
