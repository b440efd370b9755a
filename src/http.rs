//! The HTTP gateway: `router(state) -> Router` and the server around it.
//!
//! Flow of a request: [`serve`] accepts a connection (at most
//! `max_connections` at once; more wait in the listen backlog) and hands it
//! to hyper; the layers added in [`router`] trace it, refuse it with 503 when
//! `max_concurrent_requests` are already in flight, and answer 408 when no
//! response is ready within `request_timeout`; the gateway routes
//! (`gateway.rs`) resolve `/ipfs/{cid}/{path}` with the UnixFS exporter and
//! stream file bytes, raw blocks or CARs, reading blocks only through
//! [`AppState::read`]; the web UI (`ui.rs`: stream list, player, embedded
//! assets) is served from the binary.

mod api;
mod error;
mod gateway;
mod html;
mod live;
mod sniff;
mod ui;

pub use ui::site_files;

pub use error::GatewayError;

use crate::config::HttpConfig;
use crate::store::Blockstore;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use cid::Cid;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_http::trace::TraceLayer;
use tracing::Instrument;

/// What every handler shares. Cheap to clone.
///
/// Handlers read blocks only through [`AppState::read`], so a later block
/// source (fetching missing blocks from peers) changes one place.
#[derive(Clone)]
pub struct AppState {
    store: Arc<dyn Blockstore>,
    config: HttpConfig,
    streams: Option<crate::hls::streams::Streams>,
    p2p: Option<crate::p2p::P2p>,
}

impl AppState {
    /// State serving the blocks of `store` with the limits of `config`.
    pub fn new(store: Arc<dyn Blockstore>, config: HttpConfig) -> Self {
        Self {
            store,
            config,
            streams: None,
            p2p: None,
        }
    }

    /// Serves the playlists and list of `streams` too.
    pub fn with_streams(mut self, streams: crate::hls::streams::Streams) -> Self {
        self.streams = Some(streams);
        self
    }

    /// Adds the libp2p node (for the node API and fetching from peers).
    pub fn with_p2p(mut self, p2p: crate::p2p::P2p) -> Self {
        self.p2p = Some(p2p);
        self
    }

    /// The libp2p node, if it runs.
    pub fn p2p(&self) -> Option<&crate::p2p::P2p> {
        self.p2p.as_ref()
    }

    /// The node's streams, if it runs any.
    pub fn streams(&self) -> Option<&crate::hls::streams::Streams> {
        self.streams.as_ref()
    }

    /// The HTTP configuration.
    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    /// Runs blocking exporter code against the block source on the blocking
    /// pool.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Blockstore) -> T + Send + 'static,
    ) -> Result<T, GatewayError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&*store))
            .await
            .map_err(|e| GatewayError::internal("block read task", e))
    }

    /// Whether a block is held locally, without fetching it from anywhere
    /// (for `Cache-Control: only-if-cached`).
    pub async fn has_local(&self, cid: Cid) -> Result<bool, GatewayError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.has(&cid))
            .await
            .map_err(|e| GatewayError::internal("block read task", e))?
            .map_err(|e| GatewayError::internal("block store", e))
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The whole HTTP surface with its limits, timeout and tracing layers.
pub fn router(state: AppState) -> Router {
    let limits = Limits {
        permits: Arc::new(Semaphore::new(state.config.max_concurrent_requests.max(1))),
        timeout: state.config.request_timeout,
    };
    Router::new()
        .merge(ui::routes())
        .merge(gateway::routes())
        .merge(live::routes())
        .merge(api::routes())
        .fallback(|| async { GatewayError::NoRoute })
        .with_state(state)
        // Layers run outside-in: trace everything, then refuse or time out.
        .layer(middleware::from_fn_with_state(limits, limit))
        .layer(TraceLayer::new_for_http())
}

/// Request limits shared by every request of one router.
#[derive(Clone)]
struct Limits {
    permits: Arc<Semaphore>,
    timeout: Duration,
}

/// Refuses requests beyond the concurrency limit with 503 and answers 408
/// when the response is not ready in time. A request counts against the
/// limit until its body is sent, since streaming a large file is work too;
/// the timeout covers only the wait for the response head, so large
/// downloads are not cut off.
async fn limit(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    let Ok(permit) = limits.permits.clone().try_acquire_owned() else {
        return GatewayError::Overloaded.into_response();
    };
    match tokio::time::timeout(limits.timeout, next.run(req)).await {
        Ok(resp) => resp.map(|body| {
            Body::new(Permitted {
                body,
                _permit: permit,
            })
        }),
        Err(_) => GatewayError::Timeout.into_response(),
    }
}

/// A response body that holds a concurrency permit until it is dropped.
struct Permitted {
    body: Body,
    _permit: OwnedSemaphorePermit,
}

impl http_body::Body for Permitted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Serves [`router`] on `listener` until `shutdown` completes, then stops
/// accepting, lets in-flight requests finish (for at most `request_timeout`)
/// and returns.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let header_timeout = state.config.request_timeout;
    let connections = Arc::new(Semaphore::new(state.config.max_connections.max(1)));
    let app = router(state.clone());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    tracing::info!(addr = ?listener.local_addr()?, "HTTP gateway listening");
    loop {
        // Take a connection slot before accepting, so connections beyond the
        // limit wait in the kernel's backlog instead of in our memory.
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather
                    // than spin; the listener itself stays usable.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // The header timeout also runs while a kept-alive connection waits
        // for its next request, so idle clients give their slot back.
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(
            async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                drop(permit);
            }
            .instrument(tracing::debug_span!("http", %peer)),
        );
    }
    drop(listener);
    if tokio::time::timeout(header_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("closing HTTP connections still busy after the shutdown grace period");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
