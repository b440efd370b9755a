//! `GET /api/v1/node`: this node's peer id, the multiaddrs others dial
//! (with `/p2p/<id>`), and the peers connected now. `GET /api/v1/bitswap`:
//! the block exchange's counters (blocks and bytes sent and received,
//! rejected blocks, wants pending). `GET /api/v1/mesh`: the mesh links
//! (Yggdrasil and cjdns peerings) as of the last poll, with the libp2p peers
//! behind each ([`crate::mesh::Snapshot`]).

use super::{AppState, GatewayError};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

/// The node API routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/node", get(node))
        .route("/api/v1/bitswap", get(bitswap))
        .route("/api/v1/mesh", get(mesh))
}

/// The last poll's snapshot; with no telemetry running, both daemons `off`.
async fn mesh(State(state): State<AppState>) -> Json<std::sync::Arc<crate::mesh::Snapshot>> {
    Json(
        state
            .mesh()
            .map(crate::mesh::Mesh::snapshot)
            .unwrap_or_default(),
    )
}

async fn node(State(state): State<AppState>) -> Result<Json<crate::p2p::NodeInfo>, GatewayError> {
    let p2p = state.p2p().ok_or(GatewayError::P2pOff)?;
    let info = p2p
        .info()
        .await
        .map_err(|e| GatewayError::internal("p2p node", e))?;
    Ok(Json(info))
}

async fn bitswap(
    State(state): State<AppState>,
) -> Result<Json<crate::p2p::bitswap::Stats>, GatewayError> {
    let bitswap = state.bitswap().ok_or(GatewayError::P2pOff)?;
    Ok(Json(bitswap.stats()))
}
