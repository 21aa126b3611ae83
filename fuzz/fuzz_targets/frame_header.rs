//! Frames split with the size cap, in one pass and a few bytes at a time,
//! then each frame's request header parsed by its own api key and version.
//!
//! Input: one selector byte (cap and read size), then the byte stream.

#![no_main]

use bytes::BytesMut;
use kafka_dedup_proxy::codec::CodecError;
use kafka_dedup_proxy::codec::frame::{LENGTH_PREFIX, decode_frame, split_frames};
use kafka_dedup_proxy::codec::header::{
    parse_request_header, parse_request_header_auto, put_request_header, request_header_version,
};
use libfuzzer_sys::fuzz_target;

const CAPS: [usize; 8] = [0, 1, 8, 16, 64, 256, 4096, 1 << 20];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let cap = CAPS[usize::from(selector & 7)];
    let read_size = usize::from(selector >> 3) + 1;

    let whole = split_frames(stream, cap);

    // The same bytes arriving `read_size` at a time, as from a socket.
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut refused = None;
    'feed: for piece in stream.chunks(read_size) {
        buf.extend_from_slice(piece);
        loop {
            match decode_frame(&mut buf, cap) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => {
                    refused = Some(e);
                    break 'feed;
                }
            }
        }
    }
    match &whole {
        Ok(all) => {
            assert!(
                refused.is_none(),
                "incremental decoding refused {refused:?}"
            );
            assert!(
                buf.is_empty(),
                "incremental decoding kept {} bytes",
                buf.len()
            );
            assert_eq!(all, &frames);
        }
        Err(CodecError::FrameLength { len, max }) => {
            assert_eq!(*max, cap);
            assert!(*len < 0 || *len as u64 > cap as u64);
            assert_eq!(refused.as_ref(), whole.as_ref().err());
        }
        Err(e) => {
            assert!(e.is_truncation(), "unexpected {e:?}");
            assert!(refused.is_none() && !buf.is_empty());
        }
    }

    let mut offset = 0;
    for f in &frames {
        let raw = f.raw();
        assert!(raw.len() <= LENGTH_PREFIX + cap);
        assert_eq!(&raw[..], &stream[offset..offset + raw.len()]);
        offset += raw.len();

        let body = f.body();
        if let Ok((h, rest)) = parse_request_header_auto(&body) {
            assert!(rest.len() < body.len());
            let hv = request_header_version(h.api_key, h.api_version)
                .expect("a parsed header has a known version");
            let mut enc = BytesMut::new();
            put_request_header(&mut enc, &h, hv);
            assert!(enc.len() <= body.len() - rest.len());
            let (left, again) = parse_request_header(&enc, hv).expect("our header parses");
            assert!(left.is_empty());
            assert_eq!(again, h);
        }
    }
});
