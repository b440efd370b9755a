//! Session files: what is kept of each session so that archives survive
//! restarts, and what is stored for it (playlists, the stream's site).
//!
//! ```text
//! live/<stream>/<session id>.json   SessionRecord: start, archive and site CIDs, playlist
//! ```
//!
//! At open, every session file is read back; one left open by a crash is
//! ended, unless it is the stream's last and was written to less than
//! [`RECONNECT_GRACE`] ago: then a publisher reconnecting after the restart
//! continues it, as it would have without one, and it ends when the window
//! closes without one. Files are written to a temporary name and moved into place.

use super::publish::Pipeline;
use super::{Inner, SessionInfo, StreamState, Streams, StreamsError, RECONNECT_GRACE};
use crate::hls::playlist::Session;
use crate::store::pins::PinKind;
use crate::store::{Block, Blockstore, StoreError};
use crate::unixfs::import::{FileImporter, ImportOptions, Profile};
use cid::Cid;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// A session left live by a crash that a returning publisher may continue,
/// and how long it may still wait for one.
pub(super) type Resumed = (Arc<tokio::sync::Mutex<Pipeline>>, Duration);

/// What is persisted of a session, as `live/<stream>/<id>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SessionRecord {
    pub(super) id: String,
    pub(super) started_ms: u64,
    pub(super) archive_cid: Option<String>,
    /// The site built from this version of the playlists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) site_cid: Option<String>,
    pub(super) playlist: Session,
}

pub(super) fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A session id from its start time: `20261123T221500123Z`.
pub(super) fn session_id(ms: u64) -> String {
    rfc3339_ms(ms)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect()
}

pub(super) fn info_of(record: &SessionRecord) -> SessionInfo {
    let (mut ms, mut gap_ms, mut gaps, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    for s in record.playlist.segments() {
        if s.gap {
            gap_ms += s.duration_ms;
            gaps += 1;
        } else {
            ms += s.duration_ms;
            bytes += s.bytes;
        }
    }
    let media_end_ms = record
        .playlist
        .segments()
        .last()
        .map_or(record.started_ms, |s| {
            s.program_date_time_ms + s.duration_ms
        });
    SessionInfo {
        id: record.id.clone(),
        started: rfc3339_ms(record.started_ms),
        duration_s: ms as f64 / 1000.0,
        gap_s: gap_ms as f64 / 1000.0,
        gaps,
        ended: record.playlist.is_ended(),
        archive_cid: record.archive_cid.clone(),
        bytes,
        media_end_ms,
    }
}

impl Streams {
    pub(super) fn load_sessions(
        &self,
        name: &str,
        dir: &Path,
        state: &mut StreamState,
    ) -> Result<Option<Resumed>, StreamsError> {
        let mut records = Vec::new();
        let mut modified = std::collections::HashMap::new();
        for e in std::fs::read_dir(dir)
            .map_err(StoreError::io("list", dir))?
            .flatten()
        {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            let text = std::fs::read(&path).map_err(StoreError::io("read", &path))?;
            match serde_json::from_slice::<SessionRecord>(&text) {
                Ok(r) => {
                    if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
                        modified.insert(r.id.clone(), m);
                    }
                    records.push(r)
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), "skipping unreadable session: {e}")
                }
            }
        }
        // A session without a segment recorded nothing (older versions kept
        // those of refused publishes): not worth listing.
        records.retain(|r| !r.playlist.segments().is_empty());
        records.sort_by_key(|r| r.started_ms);
        let last = records.len().saturating_sub(1);
        let mut resumed = None;
        for (i, mut r) in records.into_iter().enumerate() {
            // A session the node stopped in while it was live, stored to
            // less than the reconnect window ago: its publisher may be
            // reconnecting right now, as after a dropped connection.
            let resume_in = modified
                .get(&r.id)
                .and_then(|m| m.elapsed().ok())
                .and_then(|age| RECONNECT_GRACE.checked_sub(age))
                .filter(|_| i == last && !r.playlist.is_ended())
                // Without a runtime (offline tools) no publisher can return.
                .filter(|_| tokio::runtime::Handle::try_current().is_ok());
            if let Some(wait) = resume_in {
                tracing::info!(
                    stream = name,
                    session = %r.id,
                    "the node stopped while this session was live; it continues if its \
                     publisher returns within {}s",
                    wait.as_secs()
                );
                state.site = r.site_cid.as_deref().and_then(|c| Cid::try_from(c).ok());
                state.live_text = Some(r.playlist.live());
                state.archive_text = Some(r.playlist.archive());
                state.sessions.push(info_of(&r));
                let pipeline = Arc::new(tokio::sync::Mutex::new(self.resumed_pipeline(
                    r,
                    state.format,
                    state.part_target,
                )?));
                state.current = Some(pipeline.clone());
                resumed = Some((pipeline, wait));
                continue;
            }
            if !r.playlist.is_ended() {
                // The node stopped while this session was live.
                r.playlist.end();
                let archive = r.playlist.archive();
                r.archive_cid = Some(self.inner.add_pinned(archive.as_bytes())?.to_string());
                r.site_cid = None;
            }
            if i == last && r.site_cid.is_none() {
                let old = state.site.take();
                r.site_cid = Some(self.inner.store_site(name, &r, false, old)?.to_string());
            }
            if i == last {
                state.site = r.site_cid.as_deref().and_then(|c| Cid::try_from(c).ok());
            }
            self.inner.persist(name, &r)?;
            state.live_text = Some(r.playlist.live());
            state.archive_text = Some(r.playlist.archive());
            state.sessions.push(info_of(&r));
        }
        Ok(resumed)
    }
}

/// Whether the site of this record should say "live".
pub(super) fn live_for_site(record: &SessionRecord) -> bool {
    !record.playlist.is_ended()
}

impl Inner {
    /// Builds the stream's site for this version of the session, stores and
    /// pins it, and unpins the previous version (`old`).
    pub(super) fn store_site(
        &self,
        name: &str,
        record: &SessionRecord,
        live: bool,
        old: Option<Cid>,
    ) -> Result<Cid, StreamsError> {
        let doc = crate::hls::site::StreamDoc {
            name: name.to_owned(),
            live,
            session: record.id.clone(),
            started: rfc3339_ms(record.started_ms),
            archive_cid: record.archive_cid.clone().unwrap_or_default(),
        };
        let mut blocks = crate::hls::site::Blocks::default();
        let root = crate::hls::site::build(
            &self.site_files,
            &record.playlist.live(),
            &record.playlist.archive(),
            &doc,
            &mut blocks,
        )?;
        let _guard = self.repo.writer()?;
        self.repo.blocks.put_many(&blocks.0)?;
        self.repo.pins.add(&root, PinKind::Recursive)?;
        if let Some(old) = old.filter(|o| *o != root) {
            self.repo.pins.remove(&old)?;
        }
        Ok(root)
    }

    /// Adds bytes as a UnixFS file with the `unixfs-v1-2025` profile (a
    /// segment up to 1 MiB is one raw block a browser can check with one
    /// SHA-256), optionally pinned.
    pub(super) fn add_pinned_opt(&self, bytes: &[u8], pin: bool) -> Result<Cid, StreamsError> {
        let mut opts = ImportOptions::from_profile(Profile::UnixfsV1_2025);
        // Segments are small: spawning hash threads would cost more than it saves.
        opts.hash_threads = 0;
        let mut blocks: Vec<Block> = Vec::new();
        let _guard = self.repo.writer()?;
        let mut file = FileImporter::new(&opts, &mut blocks)?;
        file.write(bytes)?;
        let root = file.finish()?;
        self.repo.blocks.put_many(&blocks)?;
        if pin {
            self.repo.pins.add(&root.cid, PinKind::Recursive)?;
        }
        Ok(root.cid)
    }

    pub(super) fn add_pinned(&self, bytes: &[u8]) -> Result<Cid, StreamsError> {
        self.add_pinned_opt(bytes, true)
    }

    pub(super) async fn add_async(
        self: Arc<Self>,
        bytes: bytes::Bytes,
        pin: bool,
    ) -> Result<Cid, StreamsError> {
        tokio::task::spawn_blocking(move || self.add_pinned_opt(&bytes, pin))
            .await
            .map_err(|e| StreamsError::Task(e.to_string()))?
    }

    /// Writes the session record atomically (temp file, fsync, rename).
    pub(super) fn persist(&self, name: &str, record: &SessionRecord) -> Result<(), StreamsError> {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).map_err(StoreError::io("create", &dir))?;
        let path = dir.join(format!("{}.json", record.id));
        let tmp = dir.join(format!(".{}.json.tmp", record.id));
        let text = serde_json::to_vec(record).map_err(|e| StreamsError::SessionFile {
            path: path.clone(),
            source: e.into(),
        })?;
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_data()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|source| StreamsError::SessionFile {
            path: path.clone(),
            source,
        })
    }
}
