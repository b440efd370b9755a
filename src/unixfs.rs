//! UnixFS: files and directories as dag-pb/raw DAGs, byte-compatible with kubo.
//!
//! Flow: `import` chunks bytes, builds the balanced file DAG and directory
//! (or HAMT-sharded directory) nodes, and hands each finished block to a sink;
//! `export` walks a DAG back into bytes, ranges and directory listings for the
//! CLI and the gateway. `pb` is the UnixFS `Data` codec both use, over
//! [`crate::dagpb`]; `hamt` the sharding scheme shared by importer and
//! exporter.

pub mod export;
pub mod hamt;
pub mod import;
pub mod pb;
