//! The admin API: HTTP/JSON on loopback, every route but `/metrics` behind a bearer token read
//! from the member's key directory. The CLI's `store`, `request`, `fetch`, `status`, `file show`
//! and `chain verify` are thin clients of it.
//!
//! Routes (JSON unless framed; errors are `{"error": "..."}` with a 4xx/5xx status, or an error
//! frame once a framed answer has begun):
//! - `POST /v1/store` — body: the raw bytes, streamed (any size up to
//!   [`crate::MAX_RECORD_BYTES`]) → [`crate::StoreReceipt`]; with `Accept:`
//!   [`frames::CONTENT_TYPE`], a framed stream of progress frames and then the receipt
//! - `POST /v1/request` — `{"file_id", "reason"}` → [`crate::RequestReceipt`]
//! - `POST /v1/fetch` — `{"file_id", "timeout_secs"[, "only_from"]}` → a framed stream
//!   ([`frames`]): the plaintext in data frames, progress frames, then a
//!   [`crate::FetchReceipt`] or an error. The node writes nothing to disk: the client writes the
//!   file. `only_from` (a member's name) asks that member alone for chunks.
//! - `GET /v1/status` → [`crate::Status`]
//! - `GET /v1/file/{file_id}` → [`FileView`]
//! - `GET /v1/chain/verify` → [`crate::ChainReport`]
//! - `POST /v1/ledger/txs` — body: a postcard `Vec<ledger::Transaction>` signed elsewhere (up to
//!   [`MAX_TX_BATCH_BYTES`] and [`MAX_TX_BATCH_COUNT`] transactions) → [`TxBatchAnswer`] once
//!   each is applied or refused (for load generators: `blocktorrent bench ledger`); with
//!   `Accept:` [`frames::CONTENT_TYPE`] the answer's head comes as soon as the batch is taken
//!   in order, so a client may send its next batch then, and its one receipt frame (the
//!   [`TxBatchAnswer`]) when each is applied, or an error frame 60 s after the head (a batch
//!   the ledger could not take is a plain JSON error)
//! - `GET /v1/ledger/nonces` → [`Nonces`]
//! - `POST /v1/shutdown` — stops the node
//! - `GET /metrics` — Prometheus text

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use keyshare::{ChunkHash, FileId};
use overlay::Transport;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};

use crate::FetchEvent;
use crate::error::Error;
use crate::frames::{self, FrameKind};
use crate::node::Node;

/// Largest JSON body the other routes accept.
const MAX_JSON_BYTES: usize = 1 << 20;
/// The longest a fetch waits for shares (a day).
const MAX_FETCH_TIMEOUT_SECS: u64 = 86_400;
/// Fetch events buffered between the fetch and a slow client.
const FETCH_QUEUE: usize = 16;

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
    /// How long to wait for shares.
    pub timeout_secs: u64,
    /// Ask only this member (by name) for chunks: the client–server baseline of `bench overlay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_from: Option<String>,
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

/// Largest body `POST /v1/ledger/txs` accepts.
pub const MAX_TX_BATCH_BYTES: usize = 16 << 20;
/// Most transactions one `POST /v1/ledger/txs` carries. Its answer holds an outcome of up to
/// ~200 bytes of JSON for each, and a framed answer is one frame of at most
/// [`frames::MAX_PAYLOAD_BYTES`]: 16 MiB of the smallest transactions (~130 bytes) would
/// answer in more than a frame may hold.
pub const MAX_TX_BATCH_COUNT: usize = 20_000;
const _: () = assert!(MAX_TX_BATCH_COUNT * 200 <= frames::MAX_PAYLOAD_BYTES);
/// The longest `POST /v1/ledger/txs` waits for its transactions to apply.
const TX_BATCH_TIMEOUT: Duration = Duration::from_secs(60);

/// What became of one transaction of a `POST /v1/ledger/txs` batch.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TxOutcome {
    /// The block that holds it; absent if it was refused before ordering.
    pub height: Option<u64>,
    /// Whether the contracts applied it.
    pub applied: bool,
    /// Why it was refused or rejected.
    pub error: Option<String>,
}

/// Answer of `POST /v1/ledger/txs`: one outcome per transaction, in order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TxBatchAnswer {
    /// The outcomes.
    pub outcomes: Vec<TxOutcome>,
}

/// Answer of `GET /v1/ledger/nonces`: the last nonce each member used, by name.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Nonces {
    /// Member name → last nonce applied (0 if none).
    pub nonces: std::collections::BTreeMap<String, u64>,
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
        Self(status_of(&error), error.to_string())
    }
}

fn status_of(error: &Error) -> StatusCode {
    match error {
        Error::UnknownFile { .. } => StatusCode::NOT_FOUND,
        Error::Invalid(_)
        | Error::NoAccessRequest { .. }
        | Error::Io { .. }
        | Error::Rejected(_)
        | Error::Submit(_) => StatusCode::BAD_REQUEST,
        Error::NotEnoughShares { .. } | Error::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        Error::StoreFailed { source, .. } => status_of(source),
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

/// Whether the client asked for a framed answer.
fn accepts_frames(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.contains(frames::CONTENT_TYPE))
}

fn json_frame(kind: FrameKind, value: &impl Serialize) -> Bytes {
    let json = serde_json::to_vec(value).unwrap_or_default();
    Bytes::from(frames::encode(kind, &json))
}

/// The receipt frame, or the error frame, that ends a framed answer.
fn final_frame<R: Serialize>(result: Result<R, Error>) -> Bytes {
    match result {
        Ok(receipt) => json_frame(FrameKind::Receipt, &receipt),
        Err(error) => json_frame(
            FrameKind::Error,
            &ErrorBody {
                error: error.to_string(),
            },
        ),
    }
}

fn framed_response(body: FrameBody) -> Response {
    (
        [(header::CONTENT_TYPE, frames::CONTENT_TYPE)],
        Body::new(body),
    )
        .into_response()
}

/// A response body fed frame by frame from a task.
enum FrameBody {
    Bounded(mpsc::Receiver<Bytes>),
    Unbounded(mpsc::UnboundedReceiver<Bytes>),
}

impl http_body::Body for FrameBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let next = match self.get_mut() {
            Self::Bounded(receiver) => receiver.poll_recv(cx),
            Self::Unbounded(receiver) => receiver.poll_recv(cx),
        };
        next.map(|frame| frame.map(|bytes| Ok(http_body::Frame::data(bytes))))
    }
}

struct ApiState<T: Transport> {
    node: Arc<Node<T>>,
    token: String,
    shutdown: Arc<Notify>,
}

/// What every handler extracts: the node and the admin token.
type Api<T> = State<Arc<ApiState<T>>>;

/// Admits a request whose bearer token is the node's, before its handler reads any of the body:
/// a client without the token gets 401 without the node buffering or parsing what it sent.
async fn require_token<T: Transport>(
    State(state): Api<T>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<Response, ApiError> {
    authorize(&state, request.headers())?;
    Ok(next.run(request).await)
}

fn authorize<T: Transport>(state: &ApiState<T>, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    // Compare in time independent of where the first difference is. A token too short to be
    // one `init` wrote admits no one (fail closed: an empty one would admit a missing header).
    let expected = state.token.as_bytes();
    let same = expected.len() >= crate::config::MIN_TOKEN_CHARS
        && presented.len() == expected.len()
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

/// How the admin API holds its connections ([`serve`]).
#[derive(Clone, Copy, Debug)]
pub struct ServeLimits {
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// How long a client may take to send a request's head, from when the node starts reading
    /// it (a new connection, or the end of the previous answer on one kept alive).
    pub header_read_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `app` on `listener` until `stop` completes, then lets the requests in progress
/// finish. Unlike `axum::serve`, it bounds the connections it serves and closes one whose
/// client does not send a request head in time: a client that sends half a request and stalls
/// holds its connection, so without both bounds a few hundred of them would exhaust the node's
/// file descriptors and lock the CLI out.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ServeLimits,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    tokio::pin!(stop);
    loop {
        let slot = tokio::select! {
            biased;
            () = &mut stop => break,
            slot = slots.clone().acquire_owned() => slot.map_err(std::io::Error::other)?,
        };
        let stream = tokio::select! {
            biased;
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of descriptors, a connection reset while queued: wait and go on.
                    tracing::debug!(%error, "admin API accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // A framed answer is written in pieces (its head at once, its frames later). With
        // Nagle's algorithm a piece written while the one before is unacknowledged waits for
        // the client's delayed ACK, ~40 ms on Linux: on a connection the client reuses, that
        // put p50 of `bench ledger` at 47 ms where it was 23.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "admin API connection keeps Nagle's algorithm");
        }
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection =
            graceful.watch(http.serve_connection(hyper_util::rt::TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "admin API connection ended");
            }
            drop(slot);
        });
    }
    graceful.shutdown().await;
    Ok(())
}

/// The API router for `node`. A `POST /v1/shutdown` notifies `shutdown`.
pub fn router<T: Transport>(node: Arc<Node<T>>, token: String, shutdown: Arc<Notify>) -> Router {
    let state = Arc::new(ApiState {
        node,
        token,
        shutdown,
    });
    let admitted = axum::middleware::from_fn_with_state(state.clone(), require_token::<T>);
    Router::new()
        .route("/v1/request", post(request::<T>))
        .route("/v1/fetch", post(fetch::<T>))
        .route("/v1/status", get(status::<T>))
        .route("/v1/file/{file_id}", get(file::<T>))
        .route("/v1/chain/verify", get(verify::<T>))
        .route("/v1/ledger/nonces", get(nonces::<T>))
        .route("/v1/shutdown", post(shutdown_node::<T>))
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES))
        // The store body is streamed into the private database, bounded by the record limit.
        .route(
            "/v1/store",
            post(store::<T>).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/v1/ledger/txs",
            post(submit_txs::<T>).layer(DefaultBodyLimit::max(MAX_TX_BATCH_BYTES)),
        )
        // Every route above needs the token; `/metrics` (heights, counters, no secrets) does not.
        .route_layer(admitted)
        .route("/metrics", get(metrics::<T>))
        .with_state(state)
}

async fn submit_txs<T: Transport>(
    State(state): Api<T>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let txs: Vec<ledger::Transaction> = postcard::from_bytes(&body).map_err(|error| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("the body is not a postcard list of transactions: {error}"),
        )
    })?;
    if txs.len() > MAX_TX_BATCH_COUNT {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "a batch carries at most {MAX_TX_BATCH_COUNT} transactions; this one carries {}",
                txs.len()
            ),
        ));
    }
    // Taken in order within the same bound as the whole answer: a ledger task stuck behind a
    // long write answers 504, not never.
    let admitted = tokio::time::timeout(TX_BATCH_TIMEOUT, state.node.admit_signed(txs))
        .await
        .map_err(|_| Error::Timeout {
            what: "the ledger to take the batch".to_string(),
            seconds: TX_BATCH_TIMEOUT.as_secs(),
        })??;
    let applied = async move {
        tokio::time::timeout(TX_BATCH_TIMEOUT, admitted.outcomes())
            .await
            .map(batch_answer)
            .map_err(|_| Error::Timeout {
                what: "the batch's transactions to apply".to_string(),
                seconds: TX_BATCH_TIMEOUT.as_secs(),
            })
    };
    if !accepts_frames(&headers) {
        return Ok(Json(applied.await?).into_response());
    }
    // The head goes out now, with the batch taken in order: the client may send its next batch
    // (ordered after this one) while this answer waits for its one receipt frame.
    let (frames, body) = mpsc::channel(1);
    tokio::spawn(async move {
        let _ = frames.send(final_frame(applied.await)).await;
    });
    Ok(framed_response(FrameBody::Bounded(body)))
}

/// One outcome per transaction of a batch, in order.
fn batch_answer(outcomes: Vec<Result<crate::Receipt, Error>>) -> TxBatchAnswer {
    let outcomes = outcomes
        .into_iter()
        .map(|outcome| match outcome {
            Ok(receipt) => TxOutcome {
                height: Some(receipt.height),
                applied: receipt.result == ledger::TxResult::Applied,
                error: match receipt.result {
                    ledger::TxResult::Applied => None,
                    ledger::TxResult::Rejected(rejection) => Some(rejection.to_string()),
                },
            },
            Err(error) => TxOutcome {
                height: None,
                applied: false,
                error: Some(error.to_string()),
            },
        })
        .collect();
    TxBatchAnswer { outcomes }
}

async fn nonces<T: Transport>(State(state): Api<T>) -> Result<Json<Nonces>, ApiError> {
    let nonces = state.node.nonces().await?;
    Ok(Json(Nonces { nonces }))
}

async fn store<T: Transport>(
    State(state): Api<T>,
    headers: HeaderMap,
    mut body: Body,
) -> Result<Response, ApiError> {
    let node = state.node.clone();
    // A file the ledger could not register is refused before its bytes are uploaded.
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok())
    {
        let consortium = &node.shared.consortium;
        if len > crate::MAX_RECORD_BYTES {
            return Err(ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "a file may hold at most {} bytes; this one holds {len}",
                    crate::MAX_RECORD_BYTES
                ),
            ));
        }
        ledger::check_table_plan(len, consortium.chunk_size_bytes, consortium.replication)
            .map_err(|error| {
                ApiError(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("cannot store {len} bytes: {error}"),
                )
            })?;
    }
    let key = {
        let mut writer = node.record_writer()?;
        while let Some(frame) =
            std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut body), cx)).await
        {
            let frame = frame.map_err(|error| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("reading the upload after {} bytes: {error}", writer.bytes()),
                )
            })?;
            if let Ok(data) = frame.into_data() {
                writer.write(&data)?;
            }
        }
        writer.finish()?
    };
    // The share runs to its end in its own task even if the client goes away, so a store is
    // never abandoned half-way by a dropped connection.
    if !accepts_frames(&headers) {
        let share = tokio::spawn(async move { node.share(&key, &mut |_| {}).await });
        let receipt = share.await.map_err(|_| Error::Stopped)??;
        return Ok(Json(receipt).into_response());
    }
    let (frames, body) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let progress_frames = frames.clone();
        let result = node
            .share(&key, &mut |progress| {
                let _ = progress_frames.send(json_frame(FrameKind::Progress, &progress));
            })
            .await;
        let _ = frames.send(final_frame(result));
    });
    Ok(framed_response(FrameBody::Unbounded(body)))
}

async fn request<T: Transport>(
    State(state): Api<T>,
    Json(body): Json<RequestBody>,
) -> Result<Json<crate::RequestReceipt>, ApiError> {
    Ok(Json(state.node.request(body.file_id, body.reason).await?))
}

async fn fetch<T: Transport>(
    State(state): Api<T>,
    Json(body): Json<FetchBody>,
) -> Result<Response, ApiError> {
    let node = state.node.clone();
    let timeout = Duration::from_secs(body.timeout_secs.min(MAX_FETCH_TIMEOUT_SECS));
    let only_from = match &body.only_from {
        None => None,
        Some(name) => Some(
            node.shared
                .consortium
                .member(name)
                .map(|member| member.id)
                .ok_or_else(|| {
                    ApiError(
                        StatusCode::BAD_REQUEST,
                        format!("only_from: {name} is not a member of the consortium"),
                    )
                })?,
        ),
    };
    let (events, mut received) = mpsc::channel(FETCH_QUEUE);
    let (frames, response) = mpsc::channel(FETCH_QUEUE);
    tokio::spawn(async move {
        let forward = async {
            while let Some(event) = received.recv().await {
                let frame = match event {
                    FetchEvent::Data(bytes) => {
                        let mut frame = frames::header(FrameKind::Data, bytes.len()).to_vec();
                        frame.extend_from_slice(&bytes);
                        Bytes::from(frame)
                    }
                    FetchEvent::Progress(progress) => json_frame(FrameKind::Progress, &progress),
                };
                if frames.send(frame).await.is_err() {
                    // The client went away: closing the event channel stops the fetch.
                    received.close();
                    return;
                }
            }
        };
        let fetching = node.fetch_from(body.file_id, timeout, events, only_from);
        let (result, ()) = tokio::join!(fetching, forward);
        let _ = frames.send(final_frame(result)).await;
    });
    Ok(framed_response(FrameBody::Bounded(response)))
}

async fn status<T: Transport>(State(state): Api<T>) -> Result<Json<crate::Status>, ApiError> {
    Ok(Json(state.node.status().await?))
}

async fn file<T: Transport>(
    State(state): Api<T>,
    Path(file_id): Path<String>,
) -> Result<Json<FileView>, ApiError> {
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

async fn verify<T: Transport>(State(state): Api<T>) -> Result<Json<crate::ChainReport>, ApiError> {
    Ok(Json(state.node.verify_chain().await?))
}

async fn shutdown_node<T: Transport>(
    State(state): Api<T>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.shutdown.notify_one();
    Ok(Json(serde_json::json!({ "stopping": true })))
}

async fn metrics<T: Transport>(State(state): Api<T>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.node.metrics().render(),
    )
}
