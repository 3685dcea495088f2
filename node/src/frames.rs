//! The framing of the admin API's streamed answers (`POST /v1/fetch`, and `POST /v1/store` when
//! the client accepts [`CONTENT_TYPE`]): a sequence of `kind (1 byte) ‖ length (u32, big
//! endian) ‖ payload` frames. Data frames carry file bytes; progress, receipt and error frames
//! carry JSON. A stream ends with exactly one receipt or error frame: an answer that stops
//! before one was cut short, whatever its HTTP status said.

use std::io::Read;

/// The media type of a framed answer.
pub const CONTENT_TYPE: &str = "application/x-blocktorrent-frames";

/// The largest payload a frame may carry (a data frame holds at most one chunk, ≤ 4 MiB).
pub const MAX_PAYLOAD_BYTES: usize = 8 << 20;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// The next bytes of the file.
    Data,
    /// A [`crate::Progress`] as JSON.
    Progress,
    /// The final receipt as JSON; the stream ends.
    Receipt,
    /// An [`crate::api::ErrorBody`] as JSON; the stream ends.
    Error,
}

impl FrameKind {
    fn tag(self) -> u8 {
        match self {
            Self::Data => b'D',
            Self::Progress => b'P',
            Self::Receipt => b'R',
            Self::Error => b'E',
        }
    }

    fn from_tag(tag: u8) -> Option<Self> {
        Some(match tag {
            b'D' => Self::Data,
            b'P' => Self::Progress,
            b'R' => Self::Receipt,
            b'E' => Self::Error,
            _ => return None,
        })
    }
}

/// The 5-byte header of a frame whose payload is `len` bytes.
pub fn header(kind: FrameKind, len: usize) -> [u8; 5] {
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    [kind.tag(), len[0], len[1], len[2], len[3]]
}

/// A whole frame.
pub fn encode(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(5 + payload.len());
    frame.extend_from_slice(&header(kind, payload.len()));
    frame.extend_from_slice(payload);
    frame
}

/// Reads the next frame; `None` at the end of the stream. A malformed or oversized frame, or a
/// stream that ends inside one, is an `InvalidData`/`UnexpectedEof` error.
pub fn read(reader: &mut impl Read) -> std::io::Result<Option<(FrameKind, Vec<u8>)>> {
    let mut head = [0u8; 5];
    let mut filled = 0;
    while filled < head.len() {
        match reader.read(&mut head[filled..]) {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let kind =
        FrameKind::from_tag(head[0]).ok_or_else(|| invalid(format!("frame tag {}", head[0])))?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_PAYLOAD_BYTES {
        return Err(invalid(format!("frame of {len} bytes")));
    }
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload)?;
    Ok(Some((kind, payload)))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn frames_read_back_as_written(frames in proptest::collection::vec((0u8..4, proptest::collection::vec(any::<u8>(), 0..300)), 0..20)) {
            let kinds = [FrameKind::Data, FrameKind::Progress, FrameKind::Receipt, FrameKind::Error];
            let mut stream = Vec::new();
            for (kind, payload) in &frames {
                stream.extend(encode(kinds[*kind as usize], payload));
            }
            let mut reader = stream.as_slice();
            for (kind, payload) in &frames {
                prop_assert_eq!(read(&mut reader).unwrap(), Some((kinds[*kind as usize], payload.clone())));
            }
            prop_assert_eq!(read(&mut reader).unwrap(), None);
        }

        #[test]
        fn a_cut_stream_is_an_error_not_an_end(payload in proptest::collection::vec(any::<u8>(), 1..100), cut in 1usize..5) {
            let frame = encode(FrameKind::Data, &payload);
            let mut reader = &frame[..frame.len() - cut.min(frame.len() - 1)];
            prop_assert!(read(&mut reader).is_err());
        }
    }

    #[test]
    fn oversized_and_unknown_frames_are_refused() {
        let mut big = header(FrameKind::Data, MAX_PAYLOAD_BYTES + 1).to_vec();
        big.extend([0; 8]);
        assert!(read(&mut big.as_slice()).is_err());
        assert!(read(&mut [b'X', 0, 0, 0, 0].as_slice()).is_err());
    }
}
