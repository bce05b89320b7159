//! Cutting length-prefixed frames out of a receive buffer without copying.
//!
//! The prefix is a 4-byte big-endian unsigned length of the message that follows. Frames larger
//! than the configured maximum are refused before their bytes are read, so a client can never make
//! the server buffer an unbounded message.

use thiserror::Error;

/// Bytes in the length prefix of every frame.
pub const FRAME_LENGTH_BYTES: usize = 4;

/// A frame that can never be accepted.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix announces more bytes than the configured maximum.
    #[error("frame of {length_bytes} bytes exceeds the maximum of {max_bytes} bytes")]
    TooLarge {
        /// Length announced by the prefix.
        length_bytes: u64,
        /// Configured maximum frame size.
        max_bytes: u64,
    },
    /// A zero-length frame carries no header and cannot be a command.
    #[error("empty frame (length prefix 0)")]
    Empty,
}

/// Looks at the start of `buffer` and says whether a whole frame is there.
///
/// Returns `Ok(Some(n))` when the first frame is complete: its message is
/// `buffer[FRAME_LENGTH_BYTES..FRAME_LENGTH_BYTES + n]`. Returns `Ok(None)` when more bytes are
/// needed, and an error as soon as the prefix alone shows the frame can never be accepted.
pub fn cut_frame(buffer: &[u8], max_frame_bytes: usize) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buffer.first_chunk::<FRAME_LENGTH_BYTES>() else {
        return Ok(None);
    };
    let length = u32::from_be_bytes(*prefix) as usize;
    if length == 0 {
        return Err(FrameError::Empty);
    }
    if length > max_frame_bytes {
        return Err(FrameError::TooLarge {
            length_bytes: length as u64,
            max_bytes: max_frame_bytes as u64,
        });
    }
    if buffer.len() - FRAME_LENGTH_BYTES < length {
        return Ok(None);
    }
    Ok(Some(length))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut out = (message.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(message);
        out
    }

    #[test]
    fn whole_frame_is_cut() {
        let bytes = framed(b"{\"c\":\"p\"}hello");
        assert_eq!(cut_frame(&bytes, 1024), Ok(Some(14)));
    }

    #[test]
    fn partial_prefix_and_partial_body_need_more() {
        let bytes = framed(b"{\"c\":\"p\"}hello");
        for end in 0..bytes.len() {
            assert_eq!(cut_frame(&bytes[..end], 1024), Ok(None), "cut at {end}");
        }
    }

    #[test]
    fn oversized_prefix_is_refused_before_the_body_arrives() {
        let prefix = (2u32 << 30).to_be_bytes();
        assert_eq!(
            cut_frame(&prefix, 1 << 20),
            Err(FrameError::TooLarge {
                length_bytes: 2 << 30,
                max_bytes: 1 << 20
            })
        );
    }

    #[test]
    fn empty_frame_is_refused() {
        assert_eq!(cut_frame(&[0, 0, 0, 0], 1024), Err(FrameError::Empty));
    }
}
