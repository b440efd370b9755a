//! The running node: opens the repo, binds the HTTP gateway, owns shutdown.
//!
//! ```text
//! Config -> Node::bind (repo, listener) -> serve task -> Node::shutdown
//! ```

use crate::config::Config;
use crate::http::{self, AppState};
use crate::store::{Repo, StoreError};
use std::net::SocketAddr;
use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why the node could not start or stopped badly.
#[derive(Debug, Error)]
pub enum NodeError {
    /// The data directory could not be opened.
    #[error("cannot open the data directory: {0}")]
    Repo(#[from] StoreError),
    /// The HTTP address could not be bound.
    #[error("cannot listen on {addr}: {source}; is another process using it? (set --http)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    http_addr: SocketAddr,
    repo: Repo,
    stop: watch::Sender<bool>,
    http: JoinHandle<std::io::Result<()>>,
}

impl Node {
    /// Opens the repo and starts serving.
    pub async fn bind(config: Config) -> Result<Self, NodeError> {
        let repo = Repo::open(&config.data_dir)?;
        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .map_err(|source| NodeError::Bind {
                addr: config.http.listen,
                source,
            })?;
        let http_addr = listener.local_addr().map_err(NodeError::Serve)?;
        let state = AppState::new(repo.blocks.clone(), config.http.clone());
        let (stop, mut stopped) = watch::channel(false);
        let http = tokio::spawn(http::serve(listener, state, async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
        Ok(Self {
            http_addr,
            repo,
            stop,
            http,
        })
    }

    /// The address the gateway listens on.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The repo this node serves.
    pub fn repo(&self) -> &Repo {
        &self.repo
    }

    /// Stops accepting, lets requests in flight finish, and returns.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        let _ = self.stop.send(true);
        match self.http.await {
            Ok(r) => r.map_err(NodeError::Serve),
            Err(e) => Err(NodeError::Serve(std::io::Error::other(e))),
        }
    }
}
