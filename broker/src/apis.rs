//! The Kafka APIs this broker serves, and at which versions. Handlers are
//! added one file per API; an API absent here is refused as unsupported.

use kafka_protocol::messages::ApiKey;

/// (API, lowest version, highest version) served.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[(ApiKey::ApiVersions, 0, 4)];

/// The served version range of `api_key`, if it is served at all.
pub fn supported(api_key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|s| s.0 == api_key)
        .map(|s| (s.1, s.2))
}
