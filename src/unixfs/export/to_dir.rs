//! A DAG written out to the file system, as `meshcast get` does: a file to
//! a file, a directory tree to a directory, symlinks as symlinks.
//!
//! The walk keeps its own stack of (CID, destination, depth) rather than
//! recursing, so a DAG from the network cannot exhaust the thread's stack;
//! directories nested deeper than [`MAX_DEPTH`] are refused. Entry names come
//! from the DAG, possibly from a hostile peer, and `safe_name` is the one
//! check that keeps every write inside the destination: a name is one plain
//! path component, and no directory names an entry twice (a second entry
//! could otherwise write through a symlink the first one made).

use super::{list, stat, symlink_target, ExportError, FileRange, NodeKind};
use crate::store::Blockstore;
use cid::Cid;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use thiserror::Error;

/// The deepest directory nesting written, below the root. Real trees are
/// far shallower, and paths this deep already outgrow what most systems
/// accept (4096 bytes on Linux, two bytes a level at least).
pub const MAX_DEPTH: usize = 1024;

/// Why a DAG could not be written out.
#[derive(Debug, Error)]
pub enum ToDirError {
    /// The DAG could not be read (boxed to keep the error small).
    #[error(transparent)]
    Export(Box<ExportError>),
    /// A directory entry's name is not one plain path component (empty,
    /// `.`, `..`, holds a separator or a NUL byte).
    #[error("{dir} has an entry named {name:?}, which cannot be written safely")]
    UnsafeName {
        /// The directory.
        dir: Cid,
        /// The entry's name.
        name: String,
    },
    /// A directory names two entries alike.
    #[error("{dir} has more than one entry named {name:?}, which cannot be written safely")]
    DuplicateName {
        /// The directory.
        dir: Cid,
        /// The repeated name.
        name: String,
    },
    /// Directories nested deeper than the limit.
    #[error("{dir} is nested more than {max} directories deep, which is not written")]
    TooDeep {
        /// The directory past the limit.
        dir: Cid,
        /// The limit.
        max: usize,
    },
    /// The file system refused a write.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done ("creating", "writing").
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl From<ExportError> for ToDirError {
    fn from(e: ExportError) -> Self {
        Self::Export(Box::new(e))
    }
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ToDirError + 'a {
    move |source| ToDirError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes the file or directory tree at `root` to `dest`, which must not
/// exist as a file (directories are created, and may exist already).
pub fn write_to_dir(store: &dyn Blockstore, root: &Cid, dest: &Path) -> Result<(), ToDirError> {
    write_within(store, root, dest, MAX_DEPTH)
}

fn write_within(
    store: &dyn Blockstore,
    root: &Cid,
    dest: &Path,
    max_depth: usize,
) -> Result<(), ToDirError> {
    let mut stack = vec![(*root, dest.to_path_buf(), 0usize)];
    while let Some((cid, path, depth)) = stack.pop() {
        let kind = stat(store, &cid)?.kind;
        match kind {
            k if k.is_dir() => {
                if depth > max_depth {
                    return Err(ToDirError::TooDeep {
                        dir: cid,
                        max: max_depth,
                    });
                }
                std::fs::create_dir_all(&path).map_err(io_err("creating", &path))?;
                let entries = list(store, &cid)?;
                let mut names = HashSet::with_capacity(entries.len());
                for e in &entries {
                    safe_name(&cid, &e.name)?;
                    if !names.insert(e.name.as_str()) {
                        return Err(ToDirError::DuplicateName {
                            dir: cid,
                            name: e.name.clone(),
                        });
                    }
                }
                // Reversed, so entries are written in listing order.
                for e in entries.into_iter().rev() {
                    stack.push((e.cid, path.join(&e.name), depth + 1));
                }
            }
            NodeKind::Symlink => {
                let target = symlink_target(store, &cid)?;
                let target = String::from_utf8_lossy(&target).into_owned();
                #[cfg(unix)]
                std::os::unix::fs::symlink(&target, &path)
                    .map_err(io_err("creating symlink", &path))?;
                #[cfg(not(unix))]
                std::fs::write(&path, target).map_err(io_err("creating", &path))?;
            }
            _ => write_file(store, &cid, &path)?,
        }
    }
    Ok(())
}

fn write_file(store: &dyn Blockstore, cid: &Cid, path: &Path) -> Result<(), ToDirError> {
    let file = std::fs::File::create(path).map_err(io_err("creating", path))?;
    let mut out = std::io::BufWriter::new(file);
    let mut range = FileRange::new(*cid, 0, u64::MAX);
    while let Some(chunk) = range.next_chunk(store)? {
        out.write_all(&chunk).map_err(io_err("writing", path))?;
    }
    out.flush().map_err(io_err("writing", path))
}

/// Refuses a name that is not exactly one plain path component, so that
/// joining it to a directory stays in that directory.
fn safe_name(dir: &Cid, name: &str) -> Result<(), ToDirError> {
    let mut parts = Path::new(name).components();
    let plain = matches!(
        (parts.next(), parts.next()),
        (Some(Component::Normal(n)), None) if n == name
    );
    if plain && !name.contains(['/', '\0']) {
        Ok(())
    } else {
        Err(ToDirError::UnsafeName {
            dir: *dir,
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdag::TestDag;
    use super::*;

    #[test]
    fn a_tree_round_trips() {
        let t = TestDag::new();
        let big: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let sub = t.dir(&[
            ("big.bin", t.chunked(&big, 1000, 3)),
            ("link", t.symlink("../a.txt")),
            ("leaf", t.pb_leaf(b"pb leaf")),
        ]);
        let root = t.dir(&[
            ("a.txt", t.raw(b"hello")),
            ("sub", sub),
            ("empty", t.dir(&[])),
        ]);
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        write_to_dir(&*t.store, &root, &out).unwrap();
        assert_eq!(std::fs::read(out.join("a.txt")).unwrap(), b"hello");
        assert_eq!(std::fs::read(out.join("sub/big.bin")).unwrap(), big);
        assert_eq!(std::fs::read(out.join("sub/leaf")).unwrap(), b"pb leaf");
        assert!(out.join("empty").is_dir());
        #[cfg(unix)]
        assert_eq!(
            std::fs::read_link(out.join("sub/link")).unwrap(),
            Path::new("../a.txt")
        );
        let mut names: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["a.txt", "empty", "sub"]);
    }

    #[test]
    fn a_file_root_is_written_as_a_file() {
        let t = TestDag::new();
        let file = t.chunked(b"some bytes to chunk", 4, 2);
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("file");
        write_to_dir(&*t.store, &file, &out).unwrap();
        assert_eq!(std::fs::read(out).unwrap(), b"some bytes to chunk");
    }

    #[test]
    fn hostile_names_are_refused() {
        for bad in ["..", ".", "", "a/b", "/etc", "../x", "x/", "nul\0byte"] {
            let t = TestDag::new();
            let root = t.dir(&[("fine", t.raw(b"ok")), (bad, t.raw(b"escaped"))]);
            let tmp = tempfile::tempdir().unwrap();
            let out = tmp.path().join("out");
            let err = write_to_dir(&*t.store, &root, &out).unwrap_err();
            assert!(
                matches!(&err, ToDirError::UnsafeName { dir, name } if *dir == root && name == bad),
                "{bad:?}: {err}"
            );
            assert!(!tmp.path().join("x").exists() && !out.join("fine").exists());
        }
    }

    #[test]
    fn a_repeated_name_is_refused() {
        // Written in order, the directory would go through the symlink.
        let t = TestDag::new();
        let outside = tempfile::tempdir().unwrap();
        let link = t.symlink(outside.path().to_str().unwrap());
        let inner = t.dir(&[("payload", t.raw(b"escaped"))]);
        let root = t.dir(&[("a", link), ("a", inner)]);
        let tmp = tempfile::tempdir().unwrap();
        let err = write_to_dir(&*t.store, &root, &tmp.path().join("out")).unwrap_err();
        assert!(
            matches!(&err, ToDirError::DuplicateName { name, .. } if name == "a"),
            "{err}"
        );
        assert!(!outside.path().join("payload").exists());
    }

    #[test]
    fn nesting_past_the_cap_is_refused() {
        let t = TestDag::new();
        let mut cid = t.dir(&[("f", t.raw(b"deep"))]);
        for _ in 0..4 {
            cid = t.dir(&[("d", cid)]);
        }
        // The root, then four levels of `d`.
        let tmp = tempfile::tempdir().unwrap();
        write_within(&*t.store, &cid, &tmp.path().join("ok"), 4).unwrap();
        assert_eq!(
            std::fs::read(tmp.path().join("ok/d/d/d/d/f")).unwrap(),
            b"deep"
        );
        let err = write_within(&*t.store, &cid, &tmp.path().join("deep"), 3).unwrap_err();
        assert!(matches!(err, ToDirError::TooDeep { max: 3, .. }), "{err}");
    }
}
