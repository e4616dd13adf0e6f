//! Listeners as Kafka names them: `[PROTOCOL://]HOST:PORT`, the protocol
//! one of PLAINTEXT (the default), SSL, SASL_PLAINTEXT, SASL_SSL. The
//! protocol is also the listener's name: a broker has at most one
//! listener of each, and tells a client connected to one the addresses
//! of the same protocol's listeners.

use std::net::SocketAddr;

/// A listener's security protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl Protocol {
    pub const ALL: [Protocol; 4] = [
        Protocol::Plaintext,
        Protocol::Ssl,
        Protocol::SaslPlaintext,
        Protocol::SaslSsl,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Plaintext => "PLAINTEXT",
            Protocol::Ssl => "SSL",
            Protocol::SaslPlaintext => "SASL_PLAINTEXT",
            Protocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Case-insensitive, as Kafka's configs are.
    pub fn parse(s: &str) -> Option<Protocol> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
    }

    /// Connections are encrypted with TLS.
    pub fn tls(self) -> bool {
        matches!(self, Protocol::Ssl | Protocol::SaslSsl)
    }

    /// Clients authenticate with SASL before any other request.
    pub fn sasl(self) -> bool {
        matches!(self, Protocol::SaslPlaintext | Protocol::SaslSsl)
    }

    /// Requests are checked against the ACLs (every protocol but
    /// PLAINTEXT).
    pub fn authorizes(self) -> bool {
        self != Protocol::Plaintext
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One listener: where it binds and what clients are told to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub protocol: Protocol,
    pub addr: SocketAddr,
    pub advertised_host: String,
    pub advertised_port: u16,
}

/// Splits `[PROTOCOL://]REST`.
pub fn split(spec: &str) -> Result<(Protocol, &str), String> {
    match spec.split_once("://") {
        Some((p, rest)) => Protocol::parse(p).map(|p| (p, rest)).ok_or_else(|| {
            format!("unknown protocol {p:?} (one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)")
        }),
        None => Ok((Protocol::Plaintext, spec)),
    }
}

/// A comma-separated list of `[PROTOCOL://]HOST:PORT`: each protocol at
/// most once.
pub fn parse_list(list: &str) -> Result<Vec<(Protocol, &str)>, String> {
    let mut out: Vec<(Protocol, &str)> = Vec::new();
    for item in list.split(',').map(str::trim) {
        if item.is_empty() {
            return Err("an empty entry".into());
        }
        let (p, rest) = split(item)?;
        if out.iter().any(|(q, _)| *q == p) {
            return Err(format!("two {p} listeners (one of each protocol)"));
        }
        out.push((p, rest));
    }
    Ok(out)
}

/// `HOST:PORT` (an IPv6 host in brackets) as host and port.
pub fn host_port(s: &str) -> Option<(String, u16)> {
    let (h, p) = s.rsplit_once(':')?;
    let h = h.trim_matches(['[', ']']);
    (!h.is_empty()).then(|| Some((h.to_string(), p.parse().ok()?)))?
}

/// A node's advertised listeners as it registers them with the cluster:
/// `PROTOCOL://HOST:PORT,...`.
pub fn endpoints(listeners: &[Listener]) -> String {
    listeners
        .iter()
        .map(|l| {
            let host = if l.advertised_host.contains(':') {
                format!("[{}]", l.advertised_host)
            } else {
                l.advertised_host.clone()
            };
            format!("{}://{host}:{}", l.protocol, l.advertised_port)
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The address a node registered (see [`endpoints`]) for `protocol`; a
/// bare `HOST:PORT` is a PLAINTEXT listener.
pub fn endpoint_for(registered: &str, protocol: Protocol) -> Option<(String, i32)> {
    parse_list(registered)
        .ok()?
        .into_iter()
        .find(|(p, _)| *p == protocol)
        .and_then(|(_, a)| host_port(a))
        .map(|(h, p)| (h, i32::from(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_lists_parse_as_kafka_writes_them() {
        let l =
            parse_list("SASL_SSL://0.0.0.0:9094, plaintext://127.0.0.1:9092,[::1]:1").unwrap_err();
        assert!(l.contains("two PLAINTEXT"), "{l}");
        let l = parse_list("SASL_SSL://0.0.0.0:9094,ssl://h:1").unwrap();
        assert_eq!(
            l,
            [(Protocol::SaslSsl, "0.0.0.0:9094"), (Protocol::Ssl, "h:1")]
        );
        assert_eq!(parse_list("h:1").unwrap(), [(Protocol::Plaintext, "h:1")]);
        assert!(parse_list("TLS://h:1")
            .unwrap_err()
            .contains("unknown protocol"));
        assert!(parse_list("h:1,").is_err());
        assert_eq!(host_port("[::1]:9092"), Some(("::1".into(), 9092)));
        assert_eq!(host_port(":9092"), None);
        assert_eq!(host_port("h:x"), None);
    }

    #[test]
    fn registered_endpoints_are_found_by_protocol() {
        let ls = [
            Listener {
                protocol: Protocol::Plaintext,
                addr: "127.0.0.1:9092".parse().unwrap(),
                advertised_host: "a".into(),
                advertised_port: 9092,
            },
            Listener {
                protocol: Protocol::SaslSsl,
                addr: "[::]:9094".parse().unwrap(),
                advertised_host: "::1".into(),
                advertised_port: 9094,
            },
        ];
        let s = endpoints(&ls);
        assert_eq!(s, "PLAINTEXT://a:9092,SASL_SSL://[::1]:9094");
        assert_eq!(
            endpoint_for(&s, Protocol::SaslSsl),
            Some(("::1".into(), 9094))
        );
        assert_eq!(endpoint_for(&s, Protocol::Ssl), None);
        // What nodes registered before listeners had protocols.
        assert_eq!(
            endpoint_for("b:1", Protocol::Plaintext),
            Some(("b".into(), 1))
        );
    }
}
