//! The wire framing: a 10-byte ASCII length header, then that many bytes of UTF-8 payload.
//!
//! ```text
//! +------------------------+------------------------------+
//! | header: 10 ASCII bytes | payload: exactly N bytes     |
//! | N in decimal, padded   | UTF-8 (JSON or a legacy      |
//! | with spaces            | text command)                |
//! +------------------------+------------------------------+
//!
//! b"13        Valid message"   (N = 13, left-aligned; "        13" and "0000000013" too)
//! ```
//!
//! The decoder rejects any header byte other than digits and spaces, and checks N against
//! the frame cap before it reserves a single byte; the encoder refuses what the decoder
//! would refuse.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Length of the header in bytes.
pub const HEADER_LEN: usize = 10;
/// Most bytes reserved ahead of payload actually received.
pub const RESERVE_AHEAD: usize = 64 * 1024;
/// Default cap on a payload: 64 MiB.
pub(crate) const DEFAULT_MAX_FRAME: usize = 64 * 1024 * 1024;

/// Why a frame could not be read or written; any of these ends the connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The header is not a decimal number padded with spaces.
    #[error("bad frame header {0:?}: want a decimal length padded with spaces to 10 bytes")]
    BadHeader(String),
    /// The announced or offered payload is over the cap.
    #[error("frame of {len} bytes is over the {max} byte cap")]
    TooLarge { len: u64, max: usize },
    /// The stream ended inside a frame.
    #[error("connection closed mid-frame ({0} bytes of a frame received)")]
    Truncated(usize),
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone, Copy)]
enum State {
    Head,
    Data(usize),
}

/// The framing codec, one per connection.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max: usize,
    state: State,
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl FrameCodec {
    /// Returns a codec whose payloads may be at most `max` bytes.
    pub fn new(max: usize) -> Self {
        FrameCodec {
            max: max.min(9_999_999_999),
            state: State::Head,
        }
    }
}

/// Parses a header: optional spaces, digits (leading zeros allowed), optional spaces.
pub fn parse_header(head: &[u8]) -> Result<u64, FrameError> {
    let bad = || FrameError::BadHeader(String::from_utf8_lossy(head).into_owned());
    let start = head.iter().position(|&b| b != b' ').ok_or_else(bad)?;
    let end = head
        .iter()
        .rposition(|&b| b != b' ')
        .map_or(start, |e| e + 1);
    let digits = &head[start..end];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    // Ten digits at most, so this cannot overflow a u64.
    Ok(digits
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if let State::Head = self.state {
            if src.len() < HEADER_LEN {
                return Ok(None);
            }
            let len = parse_header(&src[..HEADER_LEN])?;
            if len > self.max as u64 {
                return Err(FrameError::TooLarge { len, max: self.max });
            }
            src.advance(HEADER_LEN);
            let len = len as usize;
            // Reserve ahead only a little of what is promised (it is under the cap): a peer
            // announcing a large frame and sending nothing costs at most RESERVE_AHEAD; the
            // buffer grows as the payload really arrives.
            src.reserve(len.saturating_sub(src.len()).min(RESERVE_AHEAD));
            self.state = State::Data(len);
        }
        let State::Data(len) = self.state else {
            return Ok(None);
        };
        if src.len() < len {
            return Ok(None);
        }
        self.state = State::Head;
        Ok(Some(src.split_to(len).freeze()))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() && matches!(self.state, State::Head) => Ok(None),
            None => {
                let got = src.len()
                    + if matches!(self.state, State::Data(_)) {
                        HEADER_LEN
                    } else {
                        0
                    };
                Err(FrameError::Truncated(got))
            }
        }
    }
}

impl<T: AsRef<[u8]>> Encoder<T> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, payload: T, dst: &mut BytesMut) -> Result<(), FrameError> {
        let payload = payload.as_ref();
        if payload.len() > self.max {
            return Err(FrameError::TooLarge {
                len: payload.len() as u64,
                max: self.max,
            });
        }
        dst.reserve(HEADER_LEN + payload.len());
        dst.put_slice(format!("{:<width$}", payload.len(), width = HEADER_LEN).as_bytes());
        dst.put_slice(payload);
        Ok(())
    }
}

/// Gives back the buffers of a connection that a big frame grew, once they are empty. A
/// `Framed` keeps its read and write buffers' capacity for the connection's life, so one
/// 1 MB block sent or received would otherwise stay allocated on every link that moved it
/// (measured in the simulator: 40% of the heap of 50 nodes with 1 MB blocks). Buffers of at
/// most [`RESERVE_AHEAD`] bytes are kept: they serve every small message without a new
/// allocation.
pub(crate) fn release_big_buffers<T, U>(framed: &mut tokio_util::codec::Framed<T, U>) {
    if framed.read_buffer().is_empty() && framed.read_buffer().capacity() > RESERVE_AHEAD {
        *framed.read_buffer_mut() = BytesMut::new();
    }
    if framed.write_buffer().is_empty() && framed.write_buffer().capacity() > RESERVE_AHEAD {
        *framed.write_buffer_mut() = BytesMut::new();
    }
}

/// Frames `payload` into a fresh buffer (for clients writing raw sockets).
pub fn encode_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = format!("{:<width$}", payload.len(), width = HEADER_LEN).into_bytes();
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// After a 1 MiB frame each way, both buffers of both ends shrink back once empty.
    #[tokio::test]
    async fn big_buffers_are_given_back_once_empty() {
        use futures::{SinkExt, StreamExt};
        use tokio_util::codec::Framed;
        let (a, b) = tokio::io::duplex(64 * 1024);
        let mut a = Framed::new(a, FrameCodec::default());
        let mut b = Framed::new(b, FrameCodec::default());
        let big = vec![b'x'; 1 << 20];
        let (sent, got) = tokio::join!(a.send(&big[..]), b.next());
        sent.unwrap();
        assert_eq!(got.unwrap().unwrap().len(), big.len());
        assert!(
            b.read_buffer().capacity() > RESERVE_AHEAD,
            "the read grew the buffer"
        );
        release_big_buffers(&mut a);
        release_big_buffers(&mut b);
        for end in [&a, &b] {
            assert!(end.read_buffer().capacity() <= RESERVE_AHEAD);
            assert!(end.write_buffer().capacity() <= RESERVE_AHEAD);
        }
        // A buffer still holding bytes is left alone.
        b.read_buffer_mut()
            .extend_from_slice(&vec![b'1'; RESERVE_AHEAD + 1]);
        release_big_buffers(&mut b);
        assert_eq!(b.read_buffer().len(), RESERVE_AHEAD + 1);
    }

    fn decode_all(codec: &mut FrameCodec, buf: &mut BytesMut) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Some(f) = codec.decode(buf).unwrap() {
            out.push(f);
        }
        out
    }

    /// The design's worked example decodes, left- and right-aligned and zero-padded.
    #[test]
    fn decode_accepts_every_alignment() {
        for head in ["13        ", "        13", "0000000013", "   13     "] {
            let mut buf = BytesMut::from(format!("{head}Valid message").as_bytes());
            let frames = decode_all(&mut FrameCodec::default(), &mut buf);
            assert_eq!(
                frames,
                vec![Bytes::from_static(b"Valid message")],
                "{head:?}"
            );
        }
    }

    /// A header or payload split over reads waits for more bytes.
    #[test]
    fn decode_waits_for_partial_header_and_payload() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&b"13   "[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"     Valid");
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b" message");
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "Valid message");
    }

    /// Two frames in one read come out as two frames.
    #[test]
    fn decode_splits_two_frames_in_one_read() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&encode_frame(b"one"));
        buf.extend_from_slice(&encode_frame(b""));
        buf.extend_from_slice(&encode_frame("tw\u{e9}".as_bytes()));
        let frames = decode_all(&mut FrameCodec::default(), &mut buf);
        assert_eq!(frames, vec!["one".as_bytes(), b"", "tw\u{e9}".as_bytes()]);
    }

    /// Headers with anything but digits and spaces are refused.
    #[test]
    fn decode_rejects_bad_header_bytes() {
        for head in [
            "1 3       ",
            "-13       ",
            "0x10      ",
            "          ",
            "13\n       ",
            "+1        ",
        ] {
            let mut buf = BytesMut::from(head.as_bytes());
            let err = FrameCodec::default().decode(&mut buf).unwrap_err();
            assert!(matches!(err, FrameError::BadHeader(_)), "{head:?}");
        }
    }

    /// An announced length over the cap is refused before anything is reserved.
    #[test]
    fn decode_rejects_oversize_before_allocating() {
        let mut codec = FrameCodec::new(1000);
        let mut buf = BytesMut::from(&b"9999999999"[..]);
        let cap_before = buf.capacity();
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::TooLarge {
                len: 9_999_999_999,
                max: 1000
            })
        ));
        assert_eq!(buf.capacity(), cap_before);
    }

    /// A frame announcing a large payload reserves at most RESERVE_AHEAD up front.
    #[test]
    fn decode_bounds_reservation_for_stalled_frames() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&b"60000000  "[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() <= RESERVE_AHEAD + 64);
    }

    /// The stream ending mid-frame is an error; ending between frames is not.
    #[test]
    fn decode_eof_mid_frame_is_an_error() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&b"13        Valid"[..]);
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(FrameError::Truncated(_))
        ));
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&b"13   "[..]);
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(FrameError::Truncated(5))
        ));
        let mut buf = BytesMut::new();
        assert!(
            FrameCodec::default()
                .decode_eof(&mut buf)
                .unwrap()
                .is_none()
        );
    }

    /// The encoder writes the left-aligned header and refuses what the decoder would.
    #[test]
    fn encoder_matches_decoder() {
        let mut codec = FrameCodec::new(13);
        let mut buf = BytesMut::new();
        codec.encode("Valid message", &mut buf).unwrap();
        assert_eq!(&buf[..], b"13        Valid message");
        assert!(matches!(
            codec.encode("Valid message!", &mut buf),
            Err(FrameError::TooLarge { .. })
        ));
    }

    proptest! {
        /// Random bytes never panic the decoder, and what it reserves stays bounded.
        #[test]
        fn decoder_survives_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..256), cap in 0usize..512) {
            let mut codec = FrameCodec::new(cap);
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(f)) = codec.decode(&mut buf) {
                prop_assert!(f.len() <= cap);
            }
            prop_assert!(buf.capacity() <= data.len().max(cap) + RESERVE_AHEAD + 64);
        }

        /// Whatever is encoded decodes back the same, however the bytes are split.
        #[test]
        fn encode_decode_round_trip(payloads in proptest::collection::vec(".{0,40}", 1..5), split in 0usize..400) {
            let mut codec = FrameCodec::default();
            let mut all = BytesMut::new();
            for p in &payloads {
                codec.encode(p.as_bytes(), &mut all).unwrap();
            }
            let split = split.min(all.len());
            let mut buf = BytesMut::from(&all[..split]);
            let mut got = decode_all(&mut codec, &mut buf);
            buf.extend_from_slice(&all[split..]);
            got.extend(decode_all(&mut codec, &mut buf));
            let want: Vec<Bytes> = payloads.iter().map(|p| Bytes::copy_from_slice(p.as_bytes())).collect();
            prop_assert_eq!(got, want);
        }
    }
}
