//! The overlay's wire protocol.
//!
//! Peers speak QUIC with ALPN [`ALPN`] (`blocktorrent/1`), mutually authenticated by their
//! ed25519 member keys (see [`crate::quic`]). On an established connection:
//!
//! - **Requests** travel one per bidirectional stream. The client writes one frame holding a
//!   [`Request`] and finishes its send side; the server answers with one frame holding a
//!   [`Response`] and finishes. A stream that carries more than one frame, or a truncated one, is
//!   reset by the server, which keeps serving its other streams.
//! - **Messages** (the ledger's Raft traffic, opaque to the overlay) travel one per
//!   unidirectional stream: one frame holding the raw payload bytes, no reply.
//!
//! A **frame** is a 4-byte big-endian length followed by that many bytes of postcard. The
//! length is checked against [`MAX_FRAME_BYTES`] before anything is allocated, so a peer cannot
//! make another allocate more than one frame's worth per stream.
//!
//! Requests: `Ping { nonce }` → `Pong { nonce }`; `PutChunk { hash, bytes }` → `Stored` (the
//! receiver checks the hash and the sender's quota first); `GetChunk { hash }` → `Chunk { bytes }`
//! (the server checked the hash when it stored the chunk and a scrubber re-checks stored chunks
//! at a bounded rate; the client checks every chunk on receipt);
//! `HasChunks { hashes }` → `Has { present }`. Any of them may instead be answered by
//! `Error(RemoteError)`, a typed reason.

use keyshare::ChunkHash;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::error::FrameError;

/// The ALPN protocol id both sides must offer.
pub const ALPN: &[u8] = b"blocktorrent/1";

/// The largest frame accepted (8 MiB): one maximum-size chunk plus headroom.
pub const MAX_FRAME_BYTES: u32 = 8 * 1024 * 1024;

/// The most hashes one `HasChunks` may ask about.
pub const MAX_HAS_CHUNKS: usize = 65_536;

const _: () = assert!(crate::store::MAX_STORED_CHUNK_BYTES + 1024 <= MAX_FRAME_BYTES as usize);

/// A request from one peer to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Liveness and RTT probe.
    Ping {
        /// Echoed back.
        nonce: u64,
    },
    /// Store this chunk (ciphertext and tag) under its hash.
    PutChunk {
        /// SHA3-256 of `bytes`.
        hash: ChunkHash,
        /// The chunk. (`serde_bytes`: copied as one block, not byte by byte; same encoding.)
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// Send the chunk stored under this hash.
    GetChunk {
        /// The chunk's hash.
        hash: ChunkHash,
    },
    /// Which of these chunks do you hold?
    HasChunks {
        /// At most [`MAX_HAS_CHUNKS`].
        hashes: Vec<ChunkHash>,
    },
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to `Ping`.
    Pong {
        /// The request's nonce.
        nonce: u64,
    },
    /// The chunk is stored.
    Stored,
    /// The requested chunk.
    Chunk {
        /// Ciphertext and tag.
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// One flag per asked hash, in order.
    Has {
        /// Whether each chunk is held.
        present: Vec<bool>,
    },
    /// The request was refused or failed.
    Error(RemoteError),
}

/// Why a peer refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteError {
    /// The chunk is not held.
    #[error("chunk not found")]
    NotFound,
    /// Pushed bytes did not match their hash.
    #[error("chunk bytes do not match their hash")]
    HashMismatch,
    /// The sender is over its storage quota.
    #[error("storage quota exceeded")]
    QuotaExceeded,
    /// A size limit was exceeded.
    #[error("request too large")]
    TooLarge,
    /// The request could not be decoded.
    #[error("malformed request")]
    Malformed,
    /// The peer failed internally (its store is unreadable or corrupt).
    #[error("internal error at the peer")]
    Internal,
}

/// Encodes `value` as one frame: length prefix, then postcard. Sizes the frame first (a cheap
/// pass that copies nothing), so an oversized value is refused before any allocation and a
/// chunk's frame is allocated once at its size rather than grown by doubling.
pub fn encode_frame<T: Serialize>(value: &T) -> Result<Vec<u8>, FrameError> {
    let malformed = |error: postcard::Error| FrameError::Malformed(error.to_string());
    let body_len = postcard::experimental::serialized_size(value).map_err(malformed)?;
    let size_bytes = frame_size(body_len)?;
    let mut frame = Vec::with_capacity(4 + body_len);
    frame.extend_from_slice(&size_bytes.to_be_bytes());
    postcard::to_extend(value, frame).map_err(malformed)
}

/// The length prefix of a frame whose body is `body_len` bytes, if that is within the limit.
fn frame_size(body_len: usize) -> Result<u32, FrameError> {
    u32::try_from(body_len)
        .ok()
        .filter(|size| *size <= MAX_FRAME_BYTES)
        .ok_or(FrameError::TooLarge {
            size_bytes: body_len as u64,
            limit_bytes: u64::from(MAX_FRAME_BYTES),
        })
}

/// Decodes one frame's body.
pub fn decode_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, FrameError> {
    postcard::from_bytes(body).map_err(|error| FrameError::Malformed(error.to_string()))
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    writer: &mut W,
    value: &T,
) -> Result<(), FrameError> {
    let frame = encode_frame(value)?;
    writer
        .write_all(&frame)
        .await
        .map_err(|error| FrameError::Io(error.to_string()))
}

/// Writes one frame whose body is `payload` as is (messages are opaque to the overlay).
pub async fn write_raw_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    payload: &[u8],
) -> Result<(), FrameError> {
    let size_bytes = frame_size(payload.len())?;
    let io = |error: std::io::Error| FrameError::Io(error.to_string());
    writer
        .write_all(&size_bytes.to_be_bytes())
        .await
        .map_err(io)?;
    writer.write_all(payload).await.map_err(io)
}

/// Reads exactly one frame and then the end of the stream; refuses a length above `limit_bytes`
/// before allocating, a stream that ends early, and bytes after the frame.
pub async fn read_only_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit_bytes: u32,
) -> Result<Vec<u8>, FrameError> {
    let size_bytes = read_frame_header(reader, limit_bytes).await?;
    read_frame_body(reader, size_bytes).await
}

/// [`read_only_frame`], first taking the frame's length from `budget` (waiting while it holds
/// too little), so that what a peer makes this node hold in frames being read or served is
/// bounded by its budget however many streams it opens and however slowly it sends. The bytes
/// go back to the budget when the permit returned with the body is dropped.
pub async fn read_only_frame_within<'a, R: AsyncRead + Unpin>(
    reader: &mut R,
    limit_bytes: u32,
    budget: &'a Semaphore,
) -> Result<(Vec<u8>, SemaphorePermit<'a>), FrameError> {
    let size_bytes = read_frame_header(reader, limit_bytes).await?;
    let permit = budget
        .acquire_many(size_bytes)
        .await
        .map_err(|_| FrameError::Io("the peer's budget is closed".into()))?;
    let body = read_frame_body(reader, size_bytes).await?;
    Ok((body, permit))
}

/// Reads a frame's length and checks it against `limit_bytes`.
async fn read_frame_header<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit_bytes: u32,
) -> Result<u32, FrameError> {
    let mut header = [0u8; 4];
    read_exact(reader, &mut header).await?;
    let size_bytes = u32::from_be_bytes(header);
    if size_bytes > limit_bytes {
        return Err(FrameError::TooLarge {
            size_bytes: u64::from(size_bytes),
            limit_bytes: u64::from(limit_bytes),
        });
    }
    Ok(size_bytes)
}

/// Reads a frame's body of `size_bytes`, then the end of the stream.
async fn read_frame_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    size_bytes: u32,
) -> Result<Vec<u8>, FrameError> {
    let mut body = vec![0u8; size_bytes as usize];
    read_exact(reader, &mut body).await?;
    let mut probe = [0u8; 1];
    match reader.read(&mut probe).await {
        Ok(0) => Ok(body),
        Ok(_) => Err(FrameError::TrailingBytes),
        Err(error) => Err(FrameError::Io(error.to_string())),
    }
}

async fn read_exact<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
) -> Result<(), FrameError> {
    match reader.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(FrameError::Truncated)
        }
        Err(error) => Err(FrameError::Io(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    async fn round_trip<T: Serialize + for<'de> Deserialize<'de>>(value: &T) -> T {
        let frame = encode_frame(value).unwrap();
        let mut reader = frame.as_slice();
        let body = read_only_frame(&mut reader, MAX_FRAME_BYTES).await.unwrap();
        decode_body(&body).unwrap()
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn refuses_oversized_truncated_and_trailing() {
        block_on(async {
            let mut big = Vec::new();
            big.extend_from_slice(&(MAX_FRAME_BYTES + 1).to_be_bytes());
            let err = read_only_frame(&mut big.as_slice(), MAX_FRAME_BYTES)
                .await
                .unwrap_err();
            assert!(matches!(err, FrameError::TooLarge { .. }));

            let frame = encode_frame(&Request::Ping { nonce: 9 }).unwrap();
            let cut = &frame[..frame.len() - 1];
            let err = read_only_frame(&mut &cut[..], MAX_FRAME_BYTES)
                .await
                .unwrap_err();
            assert!(matches!(err, FrameError::Truncated));

            let mut extra = frame.clone();
            extra.push(0);
            let err = read_only_frame(&mut extra.as_slice(), MAX_FRAME_BYTES)
                .await
                .unwrap_err();
            assert!(matches!(err, FrameError::TrailingBytes));

            let garbage = [0u8, 0, 0, 3, 0xff, 0xff, 0xff];
            let body = read_only_frame(&mut &garbage[..], MAX_FRAME_BYTES)
                .await
                .unwrap();
            assert!(decode_body::<Request>(&body).is_err());
        });
    }

    fn hash() -> impl Strategy<Value = ChunkHash> {
        any::<[u8; 32]>().prop_map(ChunkHash::from_bytes)
    }

    fn request() -> impl Strategy<Value = Request> {
        prop_oneof![
            any::<u64>().prop_map(|nonce| Request::Ping { nonce }),
            (hash(), proptest::collection::vec(any::<u8>(), 0..2000))
                .prop_map(|(hash, bytes)| Request::PutChunk { hash, bytes }),
            hash().prop_map(|hash| Request::GetChunk { hash }),
            proptest::collection::vec(hash(), 0..50)
                .prop_map(|hashes| Request::HasChunks { hashes }),
        ]
    }

    fn response() -> impl Strategy<Value = Response> {
        prop_oneof![
            any::<u64>().prop_map(|nonce| Response::Pong { nonce }),
            Just(Response::Stored),
            proptest::collection::vec(any::<u8>(), 0..2000)
                .prop_map(|bytes| Response::Chunk { bytes }),
            proptest::collection::vec(any::<bool>(), 0..50)
                .prop_map(|present| Response::Has { present }),
            Just(Response::Error(RemoteError::QuotaExceeded)),
        ]
    }

    proptest! {
        #[test]
        fn requests_round_trip(value in request()) {
            prop_assert_eq!(block_on(round_trip(&value)), value);
        }

        #[test]
        fn responses_round_trip(value in response()) {
            prop_assert_eq!(block_on(round_trip(&value)), value);
        }

        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_body::<Request>(&bytes);
            let _ = decode_body::<Response>(&bytes);
        }
    }
}
