//! Fuzzes the frame decoder: random bytes, fed in random splits, under a small cap.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use powchain::frame::{FrameCodec, RESERVE_AHEAD};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let cap = 4096;
    let mut codec = FrameCodec::new(cap);
    let cut = (split as usize).min(rest.len());
    let mut buf = BytesMut::new();
    for part in [&rest[..cut], &rest[cut..]] {
        buf.extend_from_slice(part);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => assert!(frame.len() <= cap),
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(
            buf.capacity() <= rest.len() + RESERVE_AHEAD + 64,
            "unbounded reservation"
        );
    }
    let _ = codec.decode_eof(&mut buf);
});
