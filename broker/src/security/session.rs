//! One connection's authentication: which listener it came in on, who
//! the client is, and the SASL exchange (SaslHandshake v1, then
//! SaslAuthenticate v0-v2) that a SASL listener requires before any
//! request but ApiVersions. With `--sasl-session-lifetime-ms` the
//! session expires (KIP-368): the client re-authenticates on the same
//! connection, as the same principal, or the connection is closed at its
//! next request.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, ResponseKind, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::scram::{self, Mechanism};
use super::store::Security;
use super::Protocol;

/// The SASL mechanisms served.
pub const MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

#[derive(Debug)]
enum Sasl {
    /// Not a SASL listener.
    None,
    /// Waiting for SaslHandshake.
    Handshake,
    /// PLAIN chosen; waiting for its one message.
    Plain,
    Scram(scram::Server),
    /// Authenticated (a new SaslHandshake starts re-authentication).
    Done,
}

/// A connection's identity and SASL state.
#[derive(Debug)]
pub struct Session {
    pub protocol: Protocol,
    /// Index of the listener in the broker's configuration.
    pub listener: usize,
    /// `User:NAME` once known (at once on PLAINTEXT and SSL).
    pub principal: Option<String>,
    /// The client's address (without its port), as ACLs name hosts.
    pub host: String,
    sasl: Sasl,
    /// When the authenticated session ends (KIP-368).
    expires: Option<Instant>,
}

/// What to do with a request before its handler sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    Dispatch,
    /// SaslHandshake or SaslAuthenticate: `Session::sasl` answers it.
    Sasl,
    /// Close the connection.
    Refuse(String),
}

/// A SASL request's answer, and whether the connection ends after it.
pub struct SaslAnswer {
    pub body: ResponseKind,
    pub close: Option<String>,
}

impl Session {
    /// A new connection's session; `principal` from a client certificate
    /// (SSL with `--tls-client-ca`).
    pub fn new(
        protocol: Protocol,
        listener: usize,
        principal: Option<String>,
        host: String,
    ) -> Session {
        let (principal, sasl) = if protocol.sasl() {
            (None, Sasl::Handshake)
        } else {
            (
                Some(principal.unwrap_or_else(|| super::ANONYMOUS.to_string())),
                Sasl::None,
            )
        };
        Session {
            protocol,
            listener,
            principal,
            host,
            sasl,
            expires: None,
        }
    }

    pub fn admit(&self, api: ApiKey, now: Instant) -> Admit {
        match api {
            ApiKey::SaslHandshake | ApiKey::SaslAuthenticate => Admit::Sasl,
            ApiKey::ApiVersions => Admit::Dispatch,
            _ if self.protocol.sasl() && self.principal.is_none() => Admit::Refuse(format!(
                "{api:?} before SASL authentication on a {} listener",
                self.protocol
            )),
            _ if self.expires.is_some_and(|e| now >= e) && matches!(self.sasl, Sasl::Done) => {
                Admit::Refuse(
                    "the SASL session expired and the client did not re-authenticate".into(),
                )
            }
            _ => Admit::Dispatch,
        }
    }

    /// Answers SaslHandshake.
    pub fn handshake(&mut self, req: &SaslHandshakeRequest) -> SaslAnswer {
        let refuse = |code: ResponseError, why: String| SaslAnswer {
            body: ResponseKind::SaslHandshake(
                SaslHandshakeResponse::default()
                    .with_error_code(code.code())
                    .with_mechanisms(mechanisms()),
            ),
            close: Some(why),
        };
        if !matches!(self.sasl, Sasl::Handshake | Sasl::Done) {
            return refuse(
                ResponseError::IllegalSaslState,
                format!(
                    "SaslHandshake on a {} listener, or out of turn",
                    self.protocol
                ),
            );
        }
        let m = req.mechanism.as_str();
        self.sasl = if m == "PLAIN" {
            Sasl::Plain
        } else if let Some(mech) = Mechanism::parse(m).filter(|_| m.starts_with("SCRAM-")) {
            Sasl::Scram(scram::Server::new(mech))
        } else {
            return refuse(
                ResponseError::UnsupportedSaslMechanism,
                format!("SASL mechanism {m:?} is not served"),
            );
        };
        SaslAnswer {
            body: ResponseKind::SaslHandshake(
                SaslHandshakeResponse::default().with_mechanisms(mechanisms()),
            ),
            close: None,
        }
    }

    /// Answers SaslAuthenticate. `verify_plain` checks a PLAIN password
    /// against a credential (off the shard thread: it runs PBKDF2).
    pub async fn authenticate<F, Fut>(
        &mut self,
        req: &SaslAuthenticateRequest,
        security: &Security,
        lifetime_ms: u64,
        verify_plain: F,
    ) -> SaslAnswer
    where
        F: FnOnce(scram::Credential, Mechanism, String) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let step = match std::mem::replace(&mut self.sasl, Sasl::Handshake) {
            Sasl::Plain => match scram::parse_plain(&req.auth_bytes) {
                Ok((user, password)) => {
                    let cred = Mechanism::ALL
                        .into_iter()
                        .find_map(|m| security.credential(&user, m).map(|c| (c, m)));
                    let ok = match cred {
                        Some((c, m)) => verify_plain(c, m, password).await,
                        None => false,
                    };
                    if ok {
                        Ok(scram::Step::Done {
                            user,
                            last: Vec::new(),
                        })
                    } else {
                        Err("Authentication failed: Invalid username or password".to_string())
                    }
                }
                Err(e) => Err(e),
            },
            Sasl::Scram(mut server) => {
                let mech = match &server {
                    scram::Server::Start(m) | scram::Server::Challenged { mech: m, .. } => *m,
                };
                let r = server.step(&req.auth_bytes, |u| security.credential(u, mech));
                if matches!(r, Ok(scram::Step::Continue(_))) {
                    self.sasl = Sasl::Scram(server);
                }
                r
            }
            other => {
                self.sasl = other;
                return self.failed(
                    ResponseError::IllegalSaslState,
                    "SaslAuthenticate before SaslHandshake".into(),
                );
            }
        };
        match step {
            Ok(scram::Step::Continue(bytes)) => SaslAnswer {
                body: ResponseKind::SaslAuthenticate(
                    SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(bytes)),
                ),
                close: None,
            },
            Ok(scram::Step::Done { user, last }) => {
                let principal = format!("User:{user}");
                if self.principal.as_ref().is_some_and(|p| *p != principal) {
                    return self.failed(
                        ResponseError::SaslAuthenticationFailed,
                        "re-authentication must keep the principal".into(),
                    );
                }
                if self.principal.is_some() {
                    tracing::info!(%principal, host = %self.host, "re-authenticated (KIP-368)");
                }
                self.principal = Some(principal);
                self.sasl = Sasl::Done;
                self.expires =
                    (lifetime_ms > 0).then(|| Instant::now() + Duration::from_millis(lifetime_ms));
                SaslAnswer {
                    body: ResponseKind::SaslAuthenticate(
                        SaslAuthenticateResponse::default()
                            .with_auth_bytes(Bytes::from(last))
                            .with_session_lifetime_ms(lifetime_ms as i64),
                    ),
                    close: None,
                }
            }
            Err(why) => self.failed(ResponseError::SaslAuthenticationFailed, why),
        }
    }

    fn failed(&mut self, code: ResponseError, why: String) -> SaslAnswer {
        SaslAnswer {
            body: ResponseKind::SaslAuthenticate(
                SaslAuthenticateResponse::default()
                    .with_error_code(code.code())
                    .with_error_message(Some(StrBytes::from_string(why.clone()))),
            ),
            close: Some(format!("SASL authentication failed: {why}")),
        }
    }
}

fn mechanisms() -> Vec<StrBytes> {
    MECHANISMS
        .iter()
        .map(|m| StrBytes::from_static_str(m))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn security() -> Security {
        let mut s = Security::default();
        for m in Mechanism::ALL {
            s.upsert(
                "alice",
                m,
                scram::Credential::new(m, "pw", scram::ITERATIONS_MIN),
            )
            .unwrap();
        }
        s
    }

    fn handshake(m: &str) -> SaslHandshakeRequest {
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_string(m.into()))
    }

    fn auth(b: &[u8]) -> SaslAuthenticateRequest {
        SaslAuthenticateRequest::default().with_auth_bytes(Bytes::copy_from_slice(b))
    }

    fn error(a: &SaslAnswer) -> i16 {
        match &a.body {
            ResponseKind::SaslAuthenticate(r) => r.error_code,
            ResponseKind::SaslHandshake(r) => r.error_code,
            _ => unreachable!(),
        }
    }

    async fn verify(c: scram::Credential, m: Mechanism, p: String) -> bool {
        c.matches(m, &p)
    }

    #[test]
    fn a_sasl_listener_admits_nothing_before_authentication() {
        crate::test_support::run(|| async {
            let now = Instant::now();
            let plain = Session::new(Protocol::Plaintext, 0, None, "h".into());
            assert_eq!(plain.principal.as_deref(), Some(super::super::ANONYMOUS));
            assert_eq!(plain.admit(ApiKey::Produce, now), Admit::Dispatch);

            let mut s = Session::new(Protocol::SaslSsl, 1, None, "h".into());
            assert_eq!(s.admit(ApiKey::ApiVersions, now), Admit::Dispatch);
            assert!(matches!(s.admit(ApiKey::Metadata, now), Admit::Refuse(_)));
            let sec = security();
            // Authenticate before the handshake: refused, closed.
            let a = s.authenticate(&auth(b"\0alice\0pw"), &sec, 0, verify).await;
            assert_eq!(error(&a), ResponseError::IllegalSaslState.code());
            assert!(a.close.is_some());
            // An unknown mechanism: refused with the served ones.
            let a = s.handshake(&handshake("GSSAPI"));
            assert_eq!(error(&a), ResponseError::UnsupportedSaslMechanism.code());
            // A wrong password.
            assert!(s.handshake(&handshake("PLAIN")).close.is_none());
            let a = s
                .authenticate(&auth(b"\0alice\0wrong"), &sec, 0, verify)
                .await;
            assert_eq!(error(&a), ResponseError::SaslAuthenticationFailed.code());
            assert!(a.close.is_some());
            assert!(s.principal.is_none());
            // The right one, with a session lifetime.
            assert!(s.handshake(&handshake("PLAIN")).close.is_none());
            let a = s
                .authenticate(&auth(b"\0alice\0pw"), &sec, 60_000, verify)
                .await;
            assert_eq!(error(&a), 0);
            assert_eq!(s.principal.as_deref(), Some("User:alice"));
            assert_eq!(s.admit(ApiKey::Produce, now), Admit::Dispatch);
            let later = Instant::now() + Duration::from_secs(61);
            assert!(matches!(s.admit(ApiKey::Produce, later), Admit::Refuse(_)));
            // Re-authentication as another user is refused.
            let mut bob = security();
            bob.upsert(
                "bob",
                Mechanism::Sha256,
                scram::Credential::new(Mechanism::Sha256, "b", 4096),
            )
            .unwrap();
            assert!(s.handshake(&handshake("PLAIN")).close.is_none());
            let a = s.authenticate(&auth(b"\0bob\0b"), &bob, 0, verify).await;
            assert_eq!(error(&a), ResponseError::SaslAuthenticationFailed.code());
        });
    }
}
