//! Hostile frames that claim huge element counts decode to an error instead
//! of aborting the process. This test binary uses the guarded allocator,
//! as the `sluice` binary does; without it the first case aborts.

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::Encodable;
use sluice_net::guard::GuardedAlloc;
use sluice_net::request::{decode_request, RequestError};

#[global_allocator]
static ALLOC: GuardedAlloc = GuardedAlloc(std::alloc::System);

fn all_versions(k: ApiKey) -> Option<(i16, i16)> {
    let v = k.valid_versions();
    Some((v.min, v.max))
}

fn header(api_key: ApiKey, version: i16) -> BytesMut {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .encode(&mut buf, api_key.request_header_version(version))
        .unwrap();
    buf
}

#[test]
fn huge_array_counts_are_errors_not_aborts() {
    // Metadata v0: topics array with 2^31-1 entries, then nothing.
    let mut f = header(ApiKey::Metadata, 0);
    f.put_i32(i32::MAX);
    assert!(matches!(
        decode_request(f.freeze(), all_versions),
        Err(RequestError::Malformed { .. })
    ));
    // A flexible version: compact array length near u32::MAX.
    let mut f = header(ApiKey::Metadata, 12);
    f.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0x0f]);
    assert!(matches!(
        decode_request(f.freeze(), all_versions),
        Err(RequestError::Malformed { .. })
    ));
    // The same for every API at every version: a header, then an element
    // count of i32::MAX where the body starts. None may abort.
    for raw in 0..100i16 {
        let Ok(k) = ApiKey::try_from(raw) else {
            continue;
        };
        let range = k.valid_versions();
        for v in range.min..=range.max {
            let mut f = header(k, v);
            f.put_i32(i32::MAX);
            f.put_i32(i32::MAX);
            let _ = decode_request(f.freeze(), all_versions);
            let mut f = header(k, v);
            f.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0x0f, 0xfe, 0xff, 0xff, 0xff, 0x0f]);
            let _ = decode_request(f.freeze(), all_versions);
        }
    }
}
