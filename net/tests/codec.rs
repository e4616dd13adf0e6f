//! Request decoding and response encoding against the protocol's own
//! encoders: header versions, KIP-511, and frames that must not decode.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, RequestHeader, RequestKind,
    ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice_net::frame::FrameDecoder;
use sluice_net::request::{decode_request, RequestError};
use sluice_net::response::{
    api_versions, api_versions_unsupported, encode_response, UNSUPPORTED_VERSION,
};

const SUPPORTED: &[(ApiKey, i16, i16)] = &[(ApiKey::ApiVersions, 0, 4), (ApiKey::Metadata, 0, 12)];

fn supported(k: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED.iter().find(|s| s.0 == k).map(|s| (s.1, s.2))
}

/// A request frame (without length prefix) as a client encodes it.
fn frame<T: Encodable>(api_key: ApiKey, version: i16, correlation_id: i32, body: &T) -> Bytes {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("sluice-test")))
        .encode(&mut buf, api_key.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    buf.freeze()
}

// Proves a flexible-version request (header v2) decodes with its client id
// and body fields.
#[test]
fn api_versions_v3_decodes() {
    let body = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("librdkafka"))
        .with_client_software_version(StrBytes::from_static_str("2.3.0"));
    let req = decode_request(frame(ApiKey::ApiVersions, 3, 7, &body), supported).unwrap();
    assert_eq!(req.header.correlation_id, 7);
    assert_eq!(req.header.client_id.as_deref(), Some("sluice-test"));
    match req.body {
        RequestKind::ApiVersions(b) => assert_eq!(b.client_software_name.as_str(), "librdkafka"),
        other => panic!("{other:?}"),
    }
}

// Proves KIP-511: ApiVersions at an unknown version is answered in v0 with
// UNSUPPORTED_VERSION and the supported ranges, response header v0.
#[test]
fn api_versions_at_unknown_version_gets_the_ranges() {
    let body = ApiVersionsRequest::default();
    let mut f = BytesMut::from(&frame(ApiKey::ApiVersions, 3, 42, &body)[..]);
    f[2..4].copy_from_slice(&99i16.to_be_bytes());
    let err = decode_request(f.freeze(), supported).unwrap_err();
    let RequestError::UnsupportedVersion {
        api_key,
        version,
        correlation_id,
    } = err
    else {
        panic!("{err:?}")
    };
    assert_eq!(
        (api_key, version, correlation_id),
        (ApiKey::ApiVersions, 99, 42)
    );
    let mut out = api_versions_unsupported(correlation_id, SUPPORTED).unwrap();
    assert_eq!(out.get_i32() as usize, out.remaining());
    let header = ResponseHeader::decode(&mut out, 0).unwrap();
    assert_eq!(header.correlation_id, 42);
    let resp = ApiVersionsResponse::decode(&mut out, 0).unwrap();
    assert_eq!(resp.error_code, UNSUPPORTED_VERSION);
    assert_eq!(resp.api_keys.len(), 2);
    assert_eq!(resp.api_keys[0].max_version, 4);
    assert!(!out.has_remaining());
}

// Proves the ApiVersions response uses header v0 even at a flexible version
// (no tagged-field byte after the correlation id).
#[test]
fn api_versions_response_header_is_v0() {
    let body = ResponseKind::ApiVersions(api_versions(SUPPORTED, 0));
    let mut out = encode_response(5, ApiKey::ApiVersions, 3, &body).unwrap();
    out.advance(4);
    assert_eq!(
        ResponseHeader::decode(&mut out, 0).unwrap().correlation_id,
        5
    );
    let resp = ApiVersionsResponse::decode(&mut out, 3).unwrap();
    assert_eq!(resp.error_code, 0);
    assert!(!out.has_remaining());
}

// Proves frames that cannot be answered, and frames that can be answered
// only with an error, are told apart and never panic.
#[test]
fn bad_requests_are_classified() {
    assert!(matches!(
        decode_request(Bytes::from_static(&[0, 18, 0]), supported),
        Err(RequestError::Truncated(3))
    ));
    let mut unknown = BytesMut::new();
    unknown.put_i16(999);
    unknown.put_i16(0);
    unknown.put_i32(77);
    unknown.put_i16(-1);
    match decode_request(unknown.freeze(), supported) {
        Err(RequestError::UnknownApi {
            api_key: 999,
            correlation_id: 77,
        }) => {}
        other => panic!("{other:?}"),
    }
    // A known API this broker does not serve.
    let f = frame(
        ApiKey::Produce,
        9,
        8,
        &kafka_protocol::messages::ProduceRequest::default(),
    );
    assert!(matches!(
        decode_request(f, supported),
        Err(RequestError::UnsupportedVersion {
            correlation_id: 8,
            ..
        })
    ));
    // Truncated body.
    let whole = frame(
        ApiKey::Metadata,
        12,
        9,
        &MetadataRequest::default().with_topics(Some(vec![])),
    );
    for cut in 10..whole.len() {
        let r = decode_request(whole.slice(..cut), supported);
        assert!(
            matches!(
                r,
                Err(RequestError::Malformed {
                    correlation_id: 9,
                    ..
                })
            ),
            "cut at {cut}: {r:?}"
        );
    }
    assert!(decode_request(whole, supported).is_ok());
}

// Proves a stream of framed requests decodes one by one from a buffer.
#[test]
fn framed_stream_decodes() {
    let mut stream = BytesMut::new();
    for id in 0..3 {
        let f = frame(
            ApiKey::Metadata,
            1,
            id,
            &MetadataRequest::default().with_topics(None),
        );
        stream.put_i32(f.len() as i32);
        stream.extend_from_slice(&f);
    }
    let d = FrameDecoder::requests();
    let mut ids = Vec::new();
    while let Some(f) = d.decode(&mut stream).unwrap() {
        ids.push(decode_request(f, supported).unwrap().header.correlation_id);
    }
    assert_eq!(ids, vec![0, 1, 2]);
}

// A fetch answer's record sets are spliced in as the log's own chunks: the
// frame reads back as the codec would have written it with the bytes
// inline, and no record byte was copied into the encoded fields.
#[test]
fn fetch_answer_carries_record_chunks_without_copying() {
    use bytes::Bytes;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseKind, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use sluice_net::response::{encode_response, encode_response_chunks, records_placeholder};

    let sets: Vec<Vec<Bytes>> = vec![
        vec![],
        vec![Bytes::from(vec![1u8; 61]), Bytes::from(vec![2u8; 1000])],
        vec![],
        vec![Bytes::from(vec![3u8; 61]), Bytes::from(vec![4u8; 7])],
    ];
    for version in [4i16, 11, 12] {
        let body = |real: bool| {
            FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(
                    sets.iter()
                        .enumerate()
                        .map(|(i, s)| {
                            let len = s.iter().map(|c| c.len()).sum();
                            let rec = if real {
                                Bytes::from(s.concat())
                            } else {
                                records_placeholder(len)
                            };
                            PartitionData::default()
                                .with_partition_index(i as i32)
                                .with_records(Some(rec))
                        })
                        .collect(),
                )])
        };
        let nonempty: Vec<Vec<Bytes>> = sets.iter().filter(|s| !s.is_empty()).cloned().collect();
        let chunks =
            encode_response_chunks(7, ApiKey::Fetch, version, &body(false), nonempty).unwrap();
        let flat: Vec<u8> = chunks
            .chunks
            .iter()
            .flat_map(|c| c.iter().copied())
            .collect();
        let expect =
            encode_response(7, ApiKey::Fetch, version, &ResponseKind::Fetch(body(true))).unwrap();
        assert_eq!(flat, expect.to_vec(), "v{version}");
        for s in sets.iter().flatten() {
            assert!(
                chunks.chunks.iter().any(|c| c.as_ptr() == s.as_ptr()),
                "v{version}: a record chunk was copied"
            );
        }
    }
}
