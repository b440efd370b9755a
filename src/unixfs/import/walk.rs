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
    let top = walk.entry(path, &meta, name.clone(), &mut dirs)?;
    for d in &dirs {
        (walk.on_added)(d);
    }
    if !opts.wrap_with_directory {
        return Ok(top);
    }
    let mut wrapper = DirectoryBuilder::new();
    wrapper.add(name, top.root.cid, top.root.dag_size)?;
    let added = Added {
        name: String::new(),
        kind: EntryKind::Directory,
        root: wrapper.finish(opts, walk.sink)?,
    };
    (walk.on_added)(&added);
    Ok(added)
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
