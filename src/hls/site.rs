//! A stream's site: the small UnixFS directory its IPNS name points to.
//!
//! ```text
//! <root>/
//!   index.html    the player page (plays ./live.m3u8 or ./archive.m3u8)
//!   player.js  hls.min.js  style.css
//!   live.m3u8     the sliding window       (segments named /ipfs/<cid>)
//!   archive.m3u8  the session so far, or the whole ended session
//!   stream.json   name, live or not, session id and start, archive CID
//! ```
//!
//! Every name in it is relative, and segments are named `/ipfs/<cid>`, so
//! `/ipns/<name>/` on any path gateway (kubo's included) is a working
//! player. The page and scripts are the same bytes every time, so they
//! cost nothing after the first version; a new root is made for every
//! playlist update. Pure: bytes in, blocks out.

use crate::store::{Block, BlockSink, StoreError};
use crate::unixfs::import::{DirectoryBuilder, FileImporter, ImportError, ImportOptions, Profile};
use bytes::Bytes;
use cid::Cid;
use serde::Serialize;

/// What `stream.json` says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamDoc {
    /// The stream's public name.
    pub name: String,
    /// Whether a publisher is sending now (the page then plays live.m3u8).
    pub live: bool,
    /// The session id.
    pub session: String,
    /// The session start, RFC 3339.
    pub started: String,
    /// The CID of this version of the archive playlist.
    pub archive_cid: String,
}

/// The static files of every site, as (name, bytes).
pub fn static_files() -> Vec<(&'static str, Bytes)> {
    crate::assets::site_files()
        .into_iter()
        .map(|(name, text)| (name, Bytes::from_static(text.as_bytes())))
        .collect()
}

/// The blocks of the static files of every site (the page and scripts),
/// as a site built by this version holds them. A mirror stores them before
/// it fetches a site, so that an origin of the same version sends it only
/// the directory, playlists and `stream.json`: same bytes, same CIDs.
pub fn static_blocks(files: &[(&str, Bytes)]) -> Result<Vec<Block>, ImportError> {
    let mut blocks = Blocks::default();
    for (_, bytes) in files {
        add_file(bytes, &mut blocks)?;
    }
    Ok(blocks.0)
}

fn options() -> ImportOptions {
    let mut opts = ImportOptions::from_profile(Profile::UnixfsV1_2025);
    opts.hash_threads = 0;
    opts
}

/// Adds one file with the site's import options; returns (CID, DAG size).
fn add_file(bytes: &[u8], sink: &mut dyn BlockSink) -> Result<(Cid, u64), ImportError> {
    let opts = options();
    let mut file = FileImporter::new(&opts, sink)?;
    file.write(bytes)?;
    let root = file.finish()?;
    Ok((root.cid, root.dag_size))
}

/// Builds a site: the directory's blocks go to `sink` (with the files'
/// blocks, which may already be stored), and the root CID is returned.
pub fn build(
    files: &[(&str, Bytes)],
    live: &str,
    archive: &str,
    doc: &StreamDoc,
    sink: &mut dyn BlockSink,
) -> Result<Cid, ImportError> {
    let json = serde_json::to_vec_pretty(doc).expect("a StreamDoc always serializes");
    let mut dir = DirectoryBuilder::new();
    for (name, bytes) in files {
        let (cid, size) = add_file(bytes, sink)?;
        dir.add(*name, cid, size)?;
    }
    for (name, bytes) in [
        ("live.m3u8", live.as_bytes()),
        ("archive.m3u8", archive.as_bytes()),
        ("stream.json", &json[..]),
    ] {
        let (cid, size) = add_file(bytes, sink)?;
        dir.add(name, cid, size)?;
    }
    Ok(dir.finish(&options(), sink)?.cid)
}

/// Collects blocks in memory (the caller stores them in one batch).
#[derive(Debug, Default)]
pub struct Blocks(pub Vec<Block>);

impl BlockSink for Blocks {
    fn put_block(&mut self, block: Block) -> Result<(), StoreError> {
        self.0.push(block);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Blockstore, MemStore};
    use crate::unixfs::export;

    #[test]
    fn a_site_holds_the_static_blocks() {
        let files = static_files();
        let doc = StreamDoc {
            name: "cam".into(),
            live: true,
            session: "s".into(),
            started: "2026-01-01T00:00:00Z".into(),
            archive_cid: String::new(),
        };
        let mut site = Blocks::default();
        build(&files, "#EXTM3U\n", "#EXTM3U\n", &doc, &mut site).unwrap();
        let statics = static_blocks(&files).unwrap();
        assert!(!statics.is_empty());
        for b in &statics {
            assert!(
                site.0.iter().any(|s| s.cid == b.cid),
                "{} not in the site",
                b.cid
            );
        }
    }

    fn doc() -> StreamDoc {
        StreamDoc {
            name: "talks".into(),
            live: true,
            session: "20261124T010203Z".into(),
            started: "2026-11-24T01:02:03.000Z".into(),
            archive_cid: "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy".into(),
        }
    }

    #[test]
    fn a_site_is_a_directory_of_relative_files() {
        let mut blocks = Blocks::default();
        let files = static_files();
        let root = build(
            &files,
            "#EXTM3U\nlive\n",
            "#EXTM3U\narchive\n",
            &doc(),
            &mut blocks,
        )
        .unwrap();
        let store = MemStore::default();
        store.put_many(&blocks.0).unwrap();
        let cat = |path: &str| {
            let r = export::resolve(&store, &root, &[path]).unwrap();
            export::read_all(&store, &r.cid).unwrap()
        };
        assert_eq!(cat("live.m3u8"), b"#EXTM3U\nlive\n");
        assert_eq!(cat("archive.m3u8"), b"#EXTM3U\narchive\n");
        let json: serde_json::Value = serde_json::from_slice(&cat("stream.json")).unwrap();
        assert_eq!(json["name"], "talks");
        assert_eq!(json["live"], true);
        let index = String::from_utf8(cat("index.html")).unwrap();
        for f in ["player.js", "hls.min.js", "style.css"] {
            assert!(
                index.contains(&format!("\"{f}")),
                "index.html loads {f} relatively"
            );
            assert!(!cat(f).is_empty());
        }
        assert!(!index.contains("\"/assets"), "no absolute asset paths");
        // The same inputs give the same root: the CID only changes when
        // the playlists do.
        let again = build(
            &files,
            "#EXTM3U\nlive\n",
            "#EXTM3U\narchive\n",
            &doc(),
            &mut Blocks::default(),
        )
        .unwrap();
        assert_eq!(root, again);
        let other = build(
            &files,
            "#EXTM3U\nlive2\n",
            "#EXTM3U\narchive\n",
            &doc(),
            &mut Blocks::default(),
        )
        .unwrap();
        assert_ne!(root, other);
    }
}
