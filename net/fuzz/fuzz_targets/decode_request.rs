//! Fuzzes request framing and decoding: any bytes a client can send must
//! end in a request or an error, never a panic, an abort or runaway memory.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sluice_net::frame::FrameDecoder;
use sluice_net::guard::GuardedAlloc;
use sluice_net::request::decode_request;

#[global_allocator]
static ALLOC: GuardedAlloc = GuardedAlloc(std::alloc::System);

fuzz_target!(|data: &[u8]| {
    // As a framed stream, the way bytes arrive on a connection.
    let decoder = FrameDecoder::new(8, 1 << 20);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        let _ = decode_request(frame, |k| {
            let v = k.valid_versions();
            Some((v.min, v.max))
        });
    }
    // And as one frame body.
    let _ = decode_request(bytes::Bytes::copy_from_slice(data), |k| {
        let v = k.valid_versions();
        Some((v.min, v.max))
    });
});
