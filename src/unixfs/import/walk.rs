//! The filesystem edge of the importer: walks a path and reports each added
//! entry the way `ipfs add` does.
//!
//! kubo reports a file or symlink as soon as it is imported, in walk order
//! (directory entries sorted by name, depth first), and every directory only
//! at the end, children before parents, in the order the built directory
//! lists them (by name, or by hash for a sharded one); the path given comes
//! last, and with `wrap_with_directory` an unnamed wrapper after it. Names
//! are relative to the parent of the path given. Hidden entries (leading `.`)
//! inside directories are skipped unless `hidden` is set; symlinks are
//! stored as UnixFS Symlink nodes, never followed.

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use cid::Cid;

use super::{DirectoryBuilder, FileImporter, ImportError, ImportOptions, Imported};
use crate::store::{Block, BlockSink, DAG_PB};
use crate::unixfs::pb::{DataType, PbNode, UnixfsData};

/// What kind of entry was added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory (basic or sharded), including a wrapper.
    Directory,
    /// A symbolic link.
    Symlink,
}

/// One entry reported by [`import_path`], as `ipfs add` prints it:
/// `added <cid> <name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// Path relative to the parent of the path given (`dir/sub/file`); empty
    /// for the wrapping directory.
    pub name: String,
    /// What kind of entry this is.
    pub kind: EntryKind,
    /// The entry's root.
    pub root: Imported,
}

impl Added {
    /// The root CID.
    pub fn cid(&self) -> Cid {
        self.root.cid
    }
}

/// Callbacks and sink shared by the whole walk.
struct Walk<'a, 'b> {
    opts: &'a ImportOptions,
    sink: &'b mut dyn BlockSink,
    on_added: &'b mut dyn FnMut(&Added),
    on_progress: &'b mut dyn FnMut(u64),
}

/// Imports a file, symlink, or (with `recursive`) directory tree at `path`.
///
/// `on_added` receives each entry in kubo's order; `on_progress` the byte
/// count of each read of file content. Returns the root: the path's entry,
/// or the wrapper with `wrap_with_directory`.
pub fn import_path(
    path: &Path,
    recursive: bool,
    opts: &ImportOptions,
    sink: &mut dyn BlockSink,
    on_added: &mut dyn FnMut(&Added),
    on_progress: &mut dyn FnMut(u64),
) -> Result<Added, ImportError> {
    opts.validate()?;
    let meta = fs::symlink_metadata(path).map_err(read_err(path))?;
    if meta.is_dir() && !recursive {
        return Err(ImportError::IsDirectory {
            path: path.to_path_buf(),
        });
    }
    let name = base_name(path)?;
    let mut walk = Walk {
        opts,
        sink,
        on_added,
        on_progress,
    };
    let mut dirs = Vec::new();
    let top = walk.entry(path, &meta, name, &mut dirs)?;
    for d in &dirs {
        (walk.on_added)(d);
    }
    if !opts.wrap_with_directory {
        return Ok(top);
    }
    let added = wrap(&[top], opts, walk.sink)?;
    (walk.on_added)(&added);
    Ok(added)
}

/// The unnamed directory holding `entries` under their names, as
/// `--wrap-with-directory` adds it (several paths share one wrapper).
pub fn wrap(
    entries: &[Added],
    opts: &ImportOptions,
    sink: &mut dyn BlockSink,
) -> Result<Added, ImportError> {
    let mut wrapper = DirectoryBuilder::new();
    for e in entries {
        wrapper.add(e.name.clone(), e.root.cid, e.root.dag_size)?;
    }
    Ok(Added {
        name: String::new(),
        kind: EntryKind::Directory,
        root: wrapper.finish(opts, sink)?,
    })
}

/// Imports everything `reader` yields as one file (`ipfs add` of stdin).
pub fn import_reader(
    reader: &mut dyn Read,
    opts: &ImportOptions,
    sink: &mut dyn BlockSink,
    on_progress: &mut dyn FnMut(u64),
) -> Result<Imported, ImportError> {
    let mut file = FileImporter::new(opts, sink)?;
    file.read_from(reader, Path::new("-"), on_progress)?;
    file.finish()
}

impl Walk<'_, '_> {
    /// Imports one entry. Files and symlinks are reported at once; the
    /// directory events of the subtree are appended to `dirs`, post-order.
    fn entry(
        &mut self,
        path: &Path,
        meta: &fs::Metadata,
        name: String,
        dirs: &mut Vec<Added>,
    ) -> Result<Added, ImportError> {
        let ft = meta.file_type();
        if ft.is_dir() {
            let root = self.directory(path, &name, dirs)?;
            let added = Added {
                name,
                kind: EntryKind::Directory,
                root,
            };
            dirs.push(added.clone());
            return Ok(added);
        }
        let (kind, root) = if ft.is_symlink() {
            (EntryKind::Symlink, self.symlink(path)?)
        } else if ft.is_file() {
            (EntryKind::File, self.file(path)?)
        } else {
            return Err(ImportError::UnsupportedFileType {
                path: path.to_path_buf(),
            });
        };
        let added = Added { name, kind, root };
        (self.on_added)(&added);
        Ok(added)
    }

    fn file(&mut self, path: &Path) -> Result<Imported, ImportError> {
        let mut f = fs::File::open(path).map_err(read_err(path))?;
        let mut importer = FileImporter::new(self.opts, &mut *self.sink)?;
        importer.read_from(&mut f, path, &mut *self.on_progress)?;
        importer.finish()
    }

    fn symlink(&mut self, path: &Path) -> Result<Imported, ImportError> {
        let target = fs::read_link(path).map_err(read_err(path))?;
        let mut data = UnixfsData::new(DataType::Symlink);
        data.data = Some(target.into_os_string().into_encoded_bytes());
        let node = PbNode {
            links: Vec::new(),
            data: Some(data.encode()),
        };
        let block = Block::new(self.opts.cid_version, DAG_PB, node.encode());
        let root = Imported {
            cid: block.cid,
            file_size: 0,
            dag_size: block.data.len() as u64,
        };
        self.sink.put_block(block)?;
        Ok(root)
    }

    fn directory(
        &mut self,
        path: &Path,
        name: &str,
        dirs: &mut Vec<Added>,
    ) -> Result<Imported, ImportError> {
        let mut children: Vec<(OsString, PathBuf)> = Vec::new();
        for entry in fs::read_dir(path).map_err(read_err(path))? {
            let entry = entry.map_err(read_err(path))?;
            let file_name = entry.file_name();
            if !self.opts.hidden && file_name.as_encoded_bytes().starts_with(b".") {
                continue;
            }
            children.push((file_name, entry.path()));
        }
        // Go's os.ReadDir order: byte-wise by name.
        children.sort_by(|a, b| a.0.as_encoded_bytes().cmp(b.0.as_encoded_bytes()));

        let mut builder = DirectoryBuilder::new();
        let mut subdirs: Vec<(String, Vec<Added>)> = Vec::new();
        for (file_name, child_path) in children {
            let child_name = file_name
                .into_string()
                .map_err(|_| ImportError::NonUtf8Name {
                    path: child_path.clone(),
                })?;
            let meta = fs::symlink_metadata(&child_path).map_err(read_err(&child_path))?;
            let rel = format!("{name}/{child_name}");
            let added = if meta.is_dir() {
                let mut sub = Vec::new();
                let added = self.entry(&child_path, &meta, rel, &mut sub)?;
                subdirs.push((child_name.clone(), sub));
                added
            } else {
                self.entry(&child_path, &meta, rel, dirs)?
            };
            builder.add(child_name, added.root.cid, added.root.dag_size)?;
        }
        // Directories are reported in the order the built parent lists them.
        let order = builder.listing_order(self.opts);
        let rank: std::collections::HashMap<&str, usize> =
            order.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        subdirs.sort_by_key(|(n, _)| rank.get(n.as_str()).copied());
        for (_, sub) in subdirs {
            dirs.extend(sub);
        }
        builder.finish(self.opts, &mut *self.sink)
    }
}

/// The name kubo gives the path's entry: its last component (of the
/// absolute path for `.` and `..`).
fn base_name(path: &Path) -> Result<String, ImportError> {
    let last = match path.file_name() {
        Some(n) => n.to_os_string(),
        None => {
            let abs = fs::canonicalize(path).map_err(read_err(path))?;
            abs.file_name()
                .map(|n| n.to_os_string())
                .unwrap_or_default()
        }
    };
    last.into_string().map_err(|_| ImportError::NonUtf8Name {
        path: path.to_path_buf(),
    })
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImportError + '_ {
    move |source| ImportError::Read {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Discard;
    use crate::unixfs::import::{pattern, Profile};

    /// The fixture checked against kubo 0.22 and Helia:
    ///
    /// ```text
    /// tree/b.txt "b\n"   tree/a/x.txt "x\n"   tree/a/deep/y "y\n"
    /// tree/a/empty/      tree/.git/config "c\n"
    /// tree/link -> a/x.txt                    tree/z.bin pattern(300000)
    /// ```
    fn fixture() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join("tree");
        fs::create_dir_all(t.join("a/deep")).unwrap();
        fs::create_dir_all(t.join("a/empty")).unwrap();
        fs::create_dir_all(t.join(".git")).unwrap();
        fs::write(t.join("b.txt"), "b\n").unwrap();
        fs::write(t.join("a/x.txt"), "x\n").unwrap();
        fs::write(t.join("a/deep/y"), "y\n").unwrap();
        fs::write(t.join(".git/config"), "c\n").unwrap();
        fs::write(t.join("z.bin"), pattern(300000)).unwrap();
        std::os::unix::fs::symlink("a/x.txt", t.join("link")).unwrap();
        tmp
    }

    fn run(path: &Path, opts: &ImportOptions) -> (Added, Vec<(String, String)>, u64) {
        let mut events = Vec::new();
        let mut progress = 0;
        let root = import_path(
            path,
            true,
            opts,
            &mut Discard,
            &mut |a| events.push((a.cid().to_string(), a.name.clone())),
            &mut |n| progress += n,
        )
        .unwrap();
        (root, events, progress)
    }

    #[test]
    fn events_come_in_kubo_order_and_match_its_cids() {
        let tmp = fixture();
        let opts = ImportOptions {
            wrap_with_directory: true,
            ..ImportOptions::default()
        };
        let (root, events, progress) = run(&tmp.path().join("tree"), &opts);
        let want = [
            (
                "QmQ789bHQKJRvmffGwzaeBNVjA4HVz5mM6ZXZehWek2i28",
                "tree/a/deep/y",
            ),
            (
                "QmUNXr47Bja3aHUMfhXX5mMWTFJKuoUGETcA48vHG7dhag",
                "tree/a/x.txt",
            ),
            (
                "QmR9pC5uCF3UExca8RSrCVL8eKv7nHMpATzbEQkAHpXmVM",
                "tree/b.txt",
            ),
            (
                "QmVsR8s5BfdwbrY4evmQ94PjNHXnEcPwdqPXmnrsEzaJUU",
                "tree/link",
            ),
            (
                "QmUvFaRtWR5oNHdhMjRp7wivyusR2L4ufEkSCVs2HcMzPX",
                "tree/z.bin",
            ),
            (
                "QmRZMSA5Gxs37Xp5d3A5UfUwbuWLMi3hkeqabwcB8R4nkx",
                "tree/a/deep",
            ),
            (
                "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn",
                "tree/a/empty",
            ),
            ("QmUYVb6JrsdNkfSzMwaTB84PksideynfeCnhVByikMRwVY", "tree/a"),
            // Without hidden files (Helia `unixfs-v0-2015`).
            ("QmWyFB4nbxiBMsZLhLkJYJm29GvTKcpPVtAMEWsykNFX4V", "tree"),
            // Helia `wrapWithDirectory: true`.
            ("QmTHxYEDLMd3j8ZzwqPppQtmPYiJKzEECusfF72g6Pn8ae", ""),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(c, n)| (c.to_string(), n.to_string()))
            .collect();
        assert_eq!(events, want);
        assert_eq!(root.name, "");
        assert_eq!(root.root.dag_size, 300612);
        assert_eq!(progress, 300000 + 6);
    }

    #[test]
    fn hidden_files_are_opt_in() {
        let tmp = fixture();
        let opts = ImportOptions {
            hidden: true,
            ..ImportOptions::default()
        };
        // kubo 0.22's AddFile (which includes hidden files).
        let (root, events, _) = run(&tmp.path().join("tree"), &opts);
        assert_eq!(
            root.cid().to_string(),
            "QmTEQHVXSZrx9FjjKTZ6KLn3HgVgENZw4BKHasJ3udoQrV"
        );
        assert!(events.iter().any(|(_, n)| n == "tree/.git/config"));
        assert!(events.iter().any(|(_, n)| n == "tree/.git"));
        // A hidden path given explicitly is added.
        let (root, _, _) = run(&tmp.path().join("tree/.git"), &ImportOptions::default());
        assert_eq!(root.name, ".git");
    }

    #[test]
    fn v1_2025_profile_matches_helia() {
        let tmp = fixture();
        let opts = ImportOptions::from_profile(Profile::UnixfsV1_2025);
        let (root, _, _) = run(&tmp.path().join("tree"), &opts);
        assert_eq!(
            root.cid().to_string(),
            "bafybeiehsakeyvb47hmilgbzi3r543xzxpubra4pkmjet2e6faonazkw6e"
        );
        assert_eq!(root.root.dag_size, 300420);
    }

    /// Helia with `shardSplitThresholdBytes: 1`: every directory but the
    /// empty one becomes a HAMT, under both estimates.
    #[test]
    fn sharded_subdirectories_match_helia() {
        let tmp = fixture();
        let cases = [
            (
                Profile::UnixfsV1_2025,
                "bafybeihs6idwnouttzhcu6u6pks3der2a4eiovr7iy6jxczeojahbur3sm",
                300585,
            ),
            (
                Profile::UnixfsV0_2015,
                "QmbZuWu9rJbgrCnVAFv3N34hsWFW6eWi25PLSCojMsuSnC",
                300723,
            ),
        ];
        for (profile, cid, size) in cases {
            let opts = ImportOptions {
                hamt_threshold: 1,
                ..ImportOptions::from_profile(profile)
            };
            let (root, _, _) = run(&tmp.path().join("tree"), &opts);
            assert_eq!(root.cid().to_string(), cid, "{profile}");
            assert_eq!(root.root.dag_size, size, "{profile}");
        }
    }

    #[test]
    fn single_files_symlinks_and_stdin() {
        let tmp = fixture();
        let opts = ImportOptions::default();
        let (root, events, _) = run(&tmp.path().join("tree/z.bin"), &opts);
        assert_eq!(events.len(), 1);
        assert_eq!(root.name, "z.bin");
        assert_eq!(root.kind, EntryKind::File);
        let (link, _, _) = run(&tmp.path().join("tree/link"), &opts);
        assert_eq!(link.kind, EntryKind::Symlink);
        assert_eq!(
            link.cid().to_string(),
            "QmVsR8s5BfdwbrY4evmQ94PjNHXnEcPwdqPXmnrsEzaJUU"
        );
        let data = pattern(300000);
        let from_reader = import_reader(&mut &data[..], &opts, &mut Discard, &mut |_| {}).unwrap();
        assert_eq!(from_reader, root.root);
    }

    #[test]
    fn errors_name_the_path_and_the_fix() {
        let tmp = fixture();
        let dir = tmp.path().join("tree");
        let err = import_path(
            &dir,
            false,
            &ImportOptions::default(),
            &mut Discard,
            &mut |_| {},
            &mut |_| {},
        )
        .unwrap_err();
        assert!(err.to_string().contains("tree is a directory"), "{err}");
        assert!(err.to_string().contains("-r"), "{err}");
        let missing = tmp.path().join("missing");
        let err = import_path(
            &missing,
            true,
            &ImportOptions::default(),
            &mut Discard,
            &mut |_| {},
            &mut |_| {},
        )
        .unwrap_err();
        assert!(matches!(err, ImportError::Read { ref path, .. } if *path == missing));
    }
}
