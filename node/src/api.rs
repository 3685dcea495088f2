//! The admin API: HTTP/JSON on loopback, every route but `/metrics` behind a bearer token read
//! from the member's key directory. The CLI's `store`, `request`, `fetch`, `status`, `file show`
//! and `chain verify` are thin clients of it.
//!
//! Routes (all JSON; errors are `{"error": "..."}` with a 4xx/5xx status):
//! - `POST /v1/store` — body: the raw bytes → [`crate::StoreReceipt`]
//! - `POST /v1/request` — `{"file_id", "reason"}` → [`crate::RequestReceipt`]
//! - `POST /v1/fetch` — `{"file_id", "out", "timeout_secs"}` → [`crate::FetchReceipt`]
//! - `GET /v1/status` → [`crate::Status`]
//! - `GET /v1/file/{file_id}` → [`FileView`]
//! - `GET /v1/chain/verify` → [`crate::ChainReport`]
//! - `POST /v1/shutdown` — stops the node
//! - `GET /metrics` — Prometheus text

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use keyshare::{ChunkHash, FileId};
use overlay::Transport;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::error::Error;
use crate::node::Node;

/// Largest body `POST /v1/store` accepts (the record is held in memory while it is shared).
pub const MAX_STORE_BYTES: usize = 4 << 30;

/// Body of `POST /v1/request`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RequestBody {
    /// The file.
    pub file_id: FileId,
    /// Why (recorded on chain).
    pub reason: String,
}

/// Body of `POST /v1/fetch`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FetchBody {
    /// The file.
    pub file_id: FileId,
    /// Absolute path to write.
    pub out: PathBuf,
    /// How long to wait for shares.
    pub timeout_secs: u64,
}

/// A master table as `file show` prints it, members by name.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileView {
    /// The file.
    pub file_id: FileId,
    /// Who stored it.
    pub owner: String,
    /// Plaintext bytes.
    pub size_bytes: u64,
    /// Chunk size.
    pub chunk_size_bytes: u32,
    /// Chunk count.
    pub chunks: usize,
    /// Hash of each chunk.
    pub chunk_hashes: Vec<ChunkHash>,
    /// Owners of each chunk.
    pub chunk_owners: Vec<Vec<String>>,
    /// When it was stored (ms since the epoch).
    pub timestamp_ms: u64,
    /// Shares needed.
    pub threshold: u32,
    /// Share holders in share order.
    pub holders: Vec<String>,
    /// Block that registered it.
    pub height: u64,
    /// Whether the sealed shares are on chain.
    pub shares_deposited: bool,
    /// Holders that complained about their share.
    pub complaints: Vec<String>,
}

/// Error bodies.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// One sentence.
    pub error: String,
}

struct ApiError(StatusCode, String);

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        let status = match &error {
            Error::UnknownFile { .. } => StatusCode::NOT_FOUND,
            Error::Invalid(_)
            | Error::NoAccessRequest { .. }
            | Error::Io { .. }
            | Error::Rejected(_)
            | Error::Submit(_) => StatusCode::BAD_REQUEST,
            Error::NotEnoughShares { .. } | Error::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self(status, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

struct ApiState<T: Transport> {
    node: Arc<Node<T>>,
    token: String,
    shutdown: Arc<Notify>,
}

/// What every handler extracts: the node and the admin token.
type Api<T> = State<Arc<ApiState<T>>>;

fn authorize<T: Transport>(state: &ApiState<T>, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    // Compare in time independent of where the first difference is.
    let expected = state.token.as_bytes();
    let same = presented.len() == expected.len()
        && presented
            .bytes()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong admin token".into(),
        ))
    }
}

/// The API router for `node`. A `POST /v1/shutdown` notifies `shutdown`.
pub fn router<T: Transport>(node: Arc<Node<T>>, token: String, shutdown: Arc<Notify>) -> Router {
    let state = Arc::new(ApiState {
        node,
        token,
        shutdown,
    });
    Router::new()
        .route("/v1/store", post(store::<T>))
        .route("/v1/request", post(request::<T>))
        .route("/v1/fetch", post(fetch::<T>))
        .route("/v1/status", get(status::<T>))
        .route("/v1/file/{file_id}", get(file::<T>))
        .route("/v1/chain/verify", get(verify::<T>))
        .route("/v1/shutdown", post(shutdown_node::<T>))
        .route("/metrics", get(metrics::<T>))
        .layer(DefaultBodyLimit::max(MAX_STORE_BYTES))
        .with_state(state)
}

async fn store<T: Transport>(
    State(state): Api<T>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<crate::StoreReceipt>, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(state.node.store(body.to_vec()).await?))
}

async fn request<T: Transport>(
    State(state): Api<T>,
    headers: HeaderMap,
    Json(body): Json<RequestBody>,
) -> Result<Json<crate::RequestReceipt>, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(state.node.request(body.file_id, body.reason).await?))
}

async fn fetch<T: Transport>(
    State(state): Api<T>,
    headers: HeaderMap,
    Json(body): Json<FetchBody>,
) -> Result<Json<crate::FetchReceipt>, ApiError> {
    authorize(&state, &headers)?;
    if !body.out.is_absolute() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("output path {} must be absolute", body.out.display()),
        ));
    }
    let timeout = Duration::from_secs(body.timeout_secs);
    Ok(Json(
        state
            .node
            .fetch(body.file_id, &body.out, timeout, None)
            .await?,
    ))
}

async fn status<T: Transport>(
    State(state): Api<T>,
    headers: HeaderMap,
) -> Result<Json<crate::Status>, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(state.node.status().await?))
}

async fn file<T: Transport>(
    State(state): Api<T>,
    headers: HeaderMap,
    Path(file_id): Path<String>,
) -> Result<Json<FileView>, ApiError> {
    authorize(&state, &headers)?;
    let file_id: FileId = file_id.parse().map_err(|error| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{file_id} is not a file id: {error}"),
        )
    })?;
    let record = state.node.file(file_id).await?;
    let members = &state.node.shared.consortium.members;
    let name = |id: &ledger::MemberId| {
        members
            .iter()
            .find(|m| m.id == *id)
            .map_or_else(|| id.to_string(), |m| m.name.clone())
    };
    let table = &record.table;
    Ok(Json(FileView {
        file_id,
        owner: name(&record.owner),
        size_bytes: table.size_bytes,
        chunk_size_bytes: table.chunk_size_bytes,
        chunks: table.chunk_hashes.len(),
        chunk_hashes: table.chunk_hashes.clone(),
        chunk_owners: table
            .chunk_owners
            .iter()
            .map(|owners| owners.iter().map(name).collect())
            .collect(),
        timestamp_ms: table.timestamp_ms,
        threshold: table.threshold,
        holders: table.holders.iter().map(name).collect(),
        height: record.height,
        shares_deposited: record.deposits.is_some(),
        complaints: record.complaints.keys().map(name).collect(),
    }))
}

async fn verify<T: Transport>(
    State(state): Api<T>,
    headers: HeaderMap,
) -> Result<Json<crate::ChainReport>, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(state.node.verify_chain().await?))
}

async fn shutdown_node<T: Transport>(
    State(state): Api<T>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&state, &headers)?;
    state.shutdown.notify_one();
    Ok(Json(serde_json::json!({ "stopping": true })))
}

async fn metrics<T: Transport>(State(state): Api<T>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.node.metrics().render(),
    )
}
