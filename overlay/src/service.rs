//! The serving side: what a peer does with a request, independent of the transport.
//!
//! [`Handler`] is the seam: [`ChunkService`] answers from a [`ChunkStore`] and forwards messages
//! to a channel; tests wrap it to play a lying or slow peer. [`serve_request_stream`] and
//! [`serve_message_stream`] run the wire protocol over any byte stream, so QUIC and the
//! in-memory transport share them.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};

use crate::error::{FrameError, StoreError};
use crate::peer::PeerId;
use crate::store::ChunkStore;
use crate::wire::{
    MAX_FRAME_BYTES, MAX_HAS_CHUNKS, RemoteError, Request, Response, decode_body,
    read_only_frame_within, write_frame,
};

/// What one peer may take of a node while being served: bytes of the frames it sent that are
/// being read or handled, and requests in service at once (each holds its answer, up to a frame,
/// until the peer reads it). Requests past the limit, and frames past the bytes, wait unread,
/// and QUIC flow control stops the peer: a member that opens every stream it may and never
/// finishes, or never reads, holds at most about `bytes + requests x 2 x MAX_FRAME_BYTES` of this
/// node's memory. An honest member never waits: it pushes at most 16 chunks at once, sends one
/// Raft message at a time, and fetches with fewer requests in flight than the limit.
#[derive(Debug)]
pub struct Allowance {
    bytes: Semaphore,
    requests: Semaphore,
}

impl Allowance {
    /// An allowance of `bytes` bytes of frames and `requests` requests in service.
    pub fn new(bytes: u32, requests: u32) -> Self {
        assert!(
            bytes >= MAX_FRAME_BYTES,
            "an allowance must fit the largest frame"
        );
        Self {
            bytes: Semaphore::new(bytes as usize),
            requests: Semaphore::new(requests.max(1) as usize),
        }
    }

    /// No limit: for transports whose frames only their own peers write (the in-memory one).
    pub const fn unmetered() -> Self {
        Self {
            bytes: Semaphore::const_new(Semaphore::MAX_PERMITS),
            requests: Semaphore::const_new(Semaphore::MAX_PERMITS),
        }
    }
}

/// Answers requests and takes messages from authenticated peers.
pub trait Handler: Send + Sync + 'static {
    /// Answers `request` from `from`. Never fails: refusals are [`Response::Error`].
    fn handle(&self, from: &PeerId, request: Request) -> Response;

    /// Takes one opaque message from `from`. Implementations drop it when they are overloaded;
    /// the sender's protocol (Raft) retries.
    fn on_message(&self, from: &PeerId, payload: Vec<u8>);
}

/// A peer's standard handler: chunks from its store, messages into a bounded channel.
pub struct ChunkService {
    store: Arc<ChunkStore>,
    messages: mpsc::Sender<(PeerId, Vec<u8>)>,
}

impl ChunkService {
    /// Serves `store` and forwards messages into `messages` (dropped when it is full).
    pub fn new(store: Arc<ChunkStore>, messages: mpsc::Sender<(PeerId, Vec<u8>)>) -> Self {
        Self { store, messages }
    }
}

impl Handler for ChunkService {
    fn handle(&self, from: &PeerId, request: Request) -> Response {
        match request {
            Request::Ping { nonce } => Response::Pong { nonce },
            Request::PutChunk { hash, bytes } => match self.store.put(from, &hash, &bytes) {
                Ok(()) => Response::Stored,
                Err(error) => Response::Error(refusal(from, error)),
            },
            Request::GetChunk { hash } => match self.store.get(&hash) {
                Ok(Some(bytes)) => Response::Chunk { bytes },
                Ok(None) => Response::Error(RemoteError::NotFound),
                Err(error) => Response::Error(refusal(from, error)),
            },
            Request::HasChunks { hashes } if hashes.len() > MAX_HAS_CHUNKS => {
                Response::Error(RemoteError::TooLarge)
            }
            Request::HasChunks { hashes } => match self.store.has(&hashes) {
                Ok(present) => Response::Has { present },
                Err(error) => Response::Error(refusal(from, error)),
            },
        }
    }

    fn on_message(&self, from: &PeerId, payload: Vec<u8>) {
        if self.messages.try_send((*from, payload)).is_err() {
            tracing::debug!(%from, "message queue full or closed; dropping a message");
        }
    }
}

fn refusal(from: &PeerId, error: StoreError) -> RemoteError {
    match error {
        StoreError::HashMismatch { .. } => RemoteError::HashMismatch,
        StoreError::QuotaExceeded { .. } => RemoteError::QuotaExceeded,
        StoreError::TooLarge { .. } => RemoteError::TooLarge,
        StoreError::Redb(error) => {
            tracing::error!(%from, %error, "chunk store failed");
            RemoteError::Internal
        }
    }
}

/// Serves one request stream: reads one request frame, answers it, finishes. A malformed
/// request is answered with [`RemoteError::Malformed`]; an oversized or truncated one ends the
/// stream with the error, which the caller logs.
pub async fn serve_request_stream<R, W>(
    handler: &dyn Handler,
    from: &PeerId,
    mut recv: R,
    mut send: W,
    allowance: &Allowance,
) -> Result<(), FrameError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // One of `from`'s requests in service until its answer is written; its bytes charged until
    // it has been handled.
    let _in_service = allowance
        .requests
        .acquire()
        .await
        .map_err(|_| FrameError::Io("the peer's allowance is closed".into()))?;
    let (body, charged) =
        read_only_frame_within(&mut recv, MAX_FRAME_BYTES, &allowance.bytes).await?;
    let response = match decode_body::<Request>(&body) {
        Ok(request) => handler.handle(from, request),
        Err(error) => {
            tracing::debug!(%from, %error, "malformed request");
            Response::Error(RemoteError::Malformed)
        }
    };
    drop((body, charged));
    write_frame(&mut send, &response).await?;
    send.shutdown()
        .await
        .map_err(|error| FrameError::Io(error.to_string()))
}

/// Serves one message stream: one frame whose body is the raw payload, charged to `allowance`
/// while it is read and handed over.
pub async fn serve_message_stream<R: AsyncRead + Unpin>(
    handler: &dyn Handler,
    from: &PeerId,
    mut recv: R,
    allowance: &Allowance,
) -> Result<(), FrameError> {
    let (payload, _charged) =
        read_only_frame_within(&mut recv, MAX_FRAME_BYTES, &allowance.bytes).await?;
    handler.on_message(from, payload);
    Ok(())
}
