//! Pins: the roots that garbage collection keeps.
//!
//! A recursive pin keeps a whole DAG, a direct pin one block. Each pin is an
//! empty file `pins/<kind>/<cid>`, so creating and removing one is atomic, and
//! the CLI and a running server can pin in the same repo at once.

use super::StoreError;
use cid::Cid;
use std::fs;
use std::path::{Path, PathBuf};

/// How much of a DAG a pin keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PinKind {
    /// The root and every block below it.
    Recursive,
    /// The root block alone.
    Direct,
}

impl PinKind {
    /// The name kubo uses in `pin ls`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Recursive => "recursive",
            Self::Direct => "direct",
        }
    }
}

/// The pin set under a directory.
#[derive(Debug, Clone)]
pub struct Pins {
    dir: PathBuf,
}

impl Pins {
    /// Opens (creating if needed) the pin set in `dir/pins`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let dir = dir.join("pins");
        for kind in [PinKind::Recursive, PinKind::Direct] {
            let d = dir.join(kind.as_str());
            fs::create_dir_all(&d).map_err(StoreError::io("create", &d))?;
        }
        Ok(Self { dir })
    }

    fn path(&self, cid: &Cid, kind: PinKind) -> PathBuf {
        self.dir.join(kind.as_str()).join(cid.to_string())
    }

    /// The pin file for `cid` in whichever form it was pinned: CIDv0 and v1
    /// of the same DAG are the same pin, and `pin ls` shows the form given.
    fn existing(&self, cid: &Cid, kind: PinKind) -> Option<PathBuf> {
        let mut forms = vec![*cid, Cid::new_v1(cid.codec(), *cid.hash())];
        if let Ok(v0) = Cid::new_v0(*cid.hash()) {
            if cid.codec() == super::DAG_PB {
                forms.push(v0);
            }
        }
        forms
            .into_iter()
            .map(|c| self.path(&c, kind))
            .find(|p| p.exists())
    }

    /// Pins `cid`; a recursive pin replaces a direct one.
    pub fn add(&self, cid: &Cid, kind: PinKind) -> Result<(), StoreError> {
        if self.existing(cid, kind).is_some() {
            return Ok(());
        }
        let p = self.path(cid, kind);
        fs::File::create(&p).map_err(StoreError::io("create", &p))?;
        // Make the pin durable: its directory entry is what counts.
        if let Some(dir) = p.parent() {
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(StoreError::io("sync", dir))?;
        }
        if kind == PinKind::Recursive {
            if let Some(direct) = self.existing(cid, PinKind::Direct) {
                let _ = fs::remove_file(direct);
            }
        }
        Ok(())
    }

    /// Unpins `cid`; `false` if it was not pinned.
    pub fn remove(&self, cid: &Cid) -> Result<bool, StoreError> {
        let mut removed = false;
        for kind in [PinKind::Recursive, PinKind::Direct] {
            let Some(p) = self.existing(cid, kind) else {
                continue;
            };
            match fs::remove_file(&p) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("remove", p)(e)),
            }
        }
        Ok(removed)
    }

    /// How `cid` is pinned, if at all.
    pub fn get(&self, cid: &Cid) -> Option<PinKind> {
        [PinKind::Recursive, PinKind::Direct]
            .into_iter()
            .find(|k| self.existing(cid, *k).is_some())
    }

    /// Every pin, sorted.
    pub fn list(&self) -> Result<Vec<(Cid, PinKind)>, StoreError> {
        let mut out = Vec::new();
        for kind in [PinKind::Recursive, PinKind::Direct] {
            let d = self.dir.join(kind.as_str());
            for e in fs::read_dir(&d).map_err(StoreError::io("list", &d))? {
                let e = e.map_err(StoreError::io("list", &d))?;
                let cid = e
                    .file_name()
                    .to_str()
                    .and_then(|s| Cid::try_from(s).ok())
                    .ok_or_else(|| StoreError::Corrupt {
                        path: e.path(),
                        reason: "pin file name is not a CID".into(),
                    })?;
                out.push((cid, kind));
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Block, DAG_PB};

    #[test]
    fn add_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let pins = Pins::open(dir.path()).unwrap();
        let b = Block::new(cid::Version::V0, DAG_PB, vec![0x0a, 0x00]);
        pins.add(&b.cid, PinKind::Direct).unwrap();
        assert_eq!(pins.get(&b.cid), Some(PinKind::Direct));
        pins.add(&b.cid, PinKind::Recursive).unwrap();
        assert_eq!(pins.get(&b.cid), Some(PinKind::Recursive));
        assert_eq!(pins.list().unwrap(), vec![(b.cid, PinKind::Recursive)]);
        // The v1 form of the same CID is the same pin.
        let v1 = Cid::new_v1(DAG_PB, *b.cid.hash());
        assert!(pins.remove(&v1).unwrap());
        assert!(pins.list().unwrap().is_empty());
        assert!(!pins.remove(&b.cid).unwrap());
    }
}
