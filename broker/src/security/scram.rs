//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka speaks
//! them, the credentials they check, and PLAIN (RFC 4616) checked against
//! the same credentials. A credential keeps the salt, the iteration count
//! and the two keys derived from the salted password, never the password.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::{digest, hmac, pbkdf2};
use serde::{Deserialize, Serialize};

/// Kafka's bounds on a SCRAM credential's iterations.
pub const ITERATIONS_MIN: u32 = 4096;
pub const ITERATIONS_MAX: u32 = 16384;
/// Iterations of credentials this broker and its CLI make.
pub const ITERATIONS_DEFAULT: u32 = 8192;

/// A SCRAM mechanism; the numbers are Kafka's (ScramMechanism).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Mechanism {
    #[serde(rename = "SCRAM-SHA-256")]
    Sha256,
    #[serde(rename = "SCRAM-SHA-512")]
    Sha512,
}

impl Mechanism {
    pub const ALL: [Mechanism; 2] = [Mechanism::Sha256, Mechanism::Sha512];

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn parse(s: &str) -> Option<Mechanism> {
        Mechanism::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s))
    }

    /// Kafka's wire number (1 and 2).
    pub fn code(self) -> i8 {
        match self {
            Mechanism::Sha256 => 1,
            Mechanism::Sha512 => 2,
        }
    }

    pub fn from_code(c: i8) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.code() == c)
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            Mechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Mechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Mechanism::Sha256 => hmac::HMAC_SHA256,
            Mechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Mechanism::Sha256 => &digest::SHA256,
            Mechanism::Sha512 => &digest::SHA512,
        }
    }

    fn len(self) -> usize {
        self.digest().output_len()
    }

    fn mac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(self.hmac(), key), data)
            .as_ref()
            .to_vec()
    }

    /// Hi(password, salt, iterations) of RFC 5802.
    pub fn salted_password(self, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.len()];
        let n = std::num::NonZeroU32::new(iterations.max(1)).expect("at least one");
        pbkdf2::derive(self.pbkdf2(), n, salt, password.as_bytes(), &mut out);
        out
    }
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A stored SCRAM credential (base64 in the store's file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    #[serde(with = "b64")]
    pub salt: Vec<u8>,
    pub iterations: u32,
    #[serde(with = "b64")]
    pub stored_key: Vec<u8>,
    #[serde(with = "b64")]
    pub server_key: Vec<u8>,
}

impl Credential {
    /// From a salted password (what AlterUserScramCredentials carries).
    pub fn from_salted(
        mech: Mechanism,
        salt: Vec<u8>,
        iterations: u32,
        salted: &[u8],
    ) -> Credential {
        let client_key = mech.mac(salted, b"Client Key");
        Credential {
            salt,
            iterations,
            stored_key: digest::digest(mech.digest(), &client_key).as_ref().to_vec(),
            server_key: mech.mac(salted, b"Server Key"),
        }
    }

    /// From a password, with a fresh random salt.
    pub fn new(mech: Mechanism, password: &str, iterations: u32) -> Credential {
        let salt = random_bytes(24);
        let salted = mech.salted_password(password, &salt, iterations);
        Credential::from_salted(mech, salt, iterations, &salted)
    }

    /// Whether `password` is this credential's (PBKDF2 at its
    /// iterations: milliseconds of CPU, so callers run it off the shard
    /// thread).
    pub fn matches(&self, mech: Mechanism, password: &str) -> bool {
        let salted = mech.salted_password(password, &self.salt, self.iterations);
        let c = Credential::from_salted(mech, self.salt.clone(), self.iterations, &salted);
        same(&c.stored_key, &self.stored_key)
    }
}

/// Checks that the iteration count is one Kafka accepts.
pub fn check_iterations(i: i32) -> Result<u32, String> {
    u32::try_from(i)
        .ok()
        .filter(|i| (ITERATIONS_MIN..=ITERATIONS_MAX).contains(i))
        .ok_or_else(|| format!("iterations {i} is outside {ITERATIONS_MIN}..={ITERATIONS_MAX}"))
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    use ring::rand::SecureRandom;
    let mut b = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the OS random source works");
    b
}

/// Compares in time independent of where the slices differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The server's side of one SCRAM exchange.
#[derive(Debug)]
pub enum Server {
    /// Waiting for client-first.
    Start(Mechanism),
    /// Sent server-first; waiting for client-final.
    Challenged {
        mech: Mechanism,
        user: String,
        cred: Credential,
        nonce: String,
        gs2_header: String,
        /// client-first-bare "," server-first.
        messages: String,
    },
}

/// What one step of an exchange gives.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this and wait for the client's next message.
    Continue(Vec<u8>),
    /// Authenticated as this user; send the last message.
    Done { user: String, last: Vec<u8> },
}

impl Server {
    pub fn new(mech: Mechanism) -> Server {
        Server::Start(mech)
    }

    /// Takes the client's message; `lookup` finds a user's credential
    /// for the mechanism. An error ends the exchange (the text is for
    /// the client: it names no more than Kafka's does).
    pub fn step(
        &mut self,
        msg: &[u8],
        lookup: impl Fn(&str) -> Option<Credential>,
    ) -> Result<Step, String> {
        let msg = std::str::from_utf8(msg).map_err(|_| "a SCRAM message is not UTF-8")?;
        match std::mem::replace(self, Server::Start(Mechanism::Sha256)) {
            Server::Start(mech) => {
                let (gs2_header, bare) = split_gs2(msg)?;
                let attrs = attributes(bare)?;
                let user = unescape_name(attr(&attrs, 'n')?)?;
                let client_nonce = attr(&attrs, 'r')?;
                // Extensions: tokenauth would be a delegation token,
                // which this broker does not issue.
                if attrs.iter().any(|(k, v)| *k == "tokenauth" && v == "true") {
                    return Err("delegation tokens are not supported".into());
                }
                let cred =
                    lookup(&user).ok_or("Authentication failed: Invalid user credentials")?;
                let nonce = format!("{client_nonce}{}", B64.encode(random_bytes(18)));
                let server_first = format!(
                    "r={nonce},s={},i={}",
                    B64.encode(&cred.salt),
                    cred.iterations
                );
                *self = Server::Challenged {
                    mech,
                    user,
                    cred,
                    nonce,
                    gs2_header: gs2_header.to_string(),
                    messages: format!("{bare},{server_first}"),
                };
                Ok(Step::Continue(server_first.into_bytes()))
            }
            Server::Challenged {
                mech,
                user,
                cred,
                nonce,
                gs2_header,
                messages,
            } => {
                let (without_proof, proof) =
                    msg.rsplit_once(",p=").ok_or("client-final has no proof")?;
                let attrs = attributes(without_proof)?;
                if attr(&attrs, 'c')? != B64.encode(gs2_header.as_bytes()) {
                    return Err("channel binding does not match client-first".into());
                }
                if attr(&attrs, 'r')? != nonce {
                    return Err("nonce does not match the server's".into());
                }
                let proof = B64.decode(proof).map_err(|_| "proof is not base64")?;
                let auth_message = format!("{messages},{without_proof}");
                let signature = mech.mac(&cred.stored_key, auth_message.as_bytes());
                if proof.len() != signature.len() {
                    return Err("Authentication failed: Invalid user credentials".into());
                }
                let client_key: Vec<u8> =
                    proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
                let stored = digest::digest(mech.digest(), &client_key);
                if !same(stored.as_ref(), &cred.stored_key) {
                    return Err("Authentication failed: Invalid user credentials".into());
                }
                let server_signature = mech.mac(&cred.server_key, auth_message.as_bytes());
                Ok(Step::Done {
                    user,
                    last: format!("v={}", B64.encode(server_signature)).into_bytes(),
                })
            }
        }
    }
}

/// `gs2-header client-first-bare`: channel binding is not supported
/// ("n" or "y"), an authorization id, if given, is the user's own.
fn split_gs2(msg: &str) -> Result<(&str, &str), String> {
    let mut parts = msg.splitn(3, ',');
    let (cb, authzid) = (parts.next().unwrap_or(""), parts.next());
    let bare = parts.next().ok_or("client-first has no gs2 header")?;
    if cb != "n" && cb != "y" {
        return Err("channel binding is not supported".into());
    }
    let authzid = authzid.unwrap_or("");
    let header_len = cb.len() + authzid.len() + 2;
    if let Some(a) = authzid.strip_prefix("a=") {
        let attrs = attributes(bare)?;
        if unescape_name(a)? != unescape_name(attr(&attrs, 'n')?)? {
            return Err("an authorization id other than the user is not supported".into());
        }
    } else if !authzid.is_empty() {
        return Err("malformed gs2 header".into());
    }
    Ok((&msg[..header_len], bare))
}

fn attributes(s: &str) -> Result<Vec<(&str, String)>, String> {
    s.split(',')
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k, v.to_string()))
                .ok_or_else(|| format!("malformed SCRAM attribute {kv:?}"))
        })
        .collect()
}

fn attr<'a>(attrs: &'a [(&str, String)], key: char) -> Result<&'a str, String> {
    attrs
        .iter()
        .find(|(k, _)| k.len() == 1 && k.starts_with(key))
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| format!("SCRAM message without {key}="))
}

/// saslname of RFC 5802: `=2C` is `,`, `=3D` is `=`.
fn unescape_name(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err("malformed user name".into()),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// PLAIN's message: `[authzid] NUL authcid NUL password`; an
/// authorization id, if given, must be the user.
pub fn parse_plain(msg: &[u8]) -> Result<(String, String), String> {
    let s = std::str::from_utf8(msg).map_err(|_| "a PLAIN message is not UTF-8")?;
    let mut parts = s.split('\0');
    let (authzid, user, password) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(u), Some(p), None) => (a, u, p),
        _ => return Err("malformed PLAIN message".into()),
    };
    if user.is_empty() || password.is_empty() {
        return Err("PLAIN without a user or a password".into());
    }
    if !authzid.is_empty() && authzid != user {
        return Err("an authorization id other than the user is not supported".into());
    }
    Ok((user.to_string(), password.to_string()))
}

mod b64 {
    use super::*;
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's SCRAM-SHA-256 example, with its salt and nonces.
    #[test]
    fn the_rfc_7677_exchange_authenticates() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = Mechanism::Sha256.salted_password("pencil", &salt, 4096);
        let cred = Credential::from_salted(Mechanism::Sha256, salt, 4096, &salted);
        let client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        // The server's nonce is random; put the RFC's in place.
        let mut s = Server::Challenged {
            mech: Mechanism::Sha256,
            user: "user".into(),
            cred: cred.clone(),
            nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
            gs2_header: "n,,".into(),
            messages: format!("{client_first_bare},{server_first}"),
        };
        let client_final = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let step = s.step(client_final.as_bytes(), |_| None).unwrap();
        assert_eq!(
            step,
            Step::Done {
                user: "user".into(),
                last: b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec()
            }
        );
        // A wrong proof is refused.
        let mut s2 = Server::Challenged {
            mech: Mechanism::Sha256,
            user: "user".into(),
            cred,
            nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
            gs2_header: "n,,".into(),
            messages: format!("{client_first_bare},{server_first}"),
        };
        let bad = client_final.replace("p=dH", "p=dI");
        assert!(s2.step(bad.as_bytes(), |_| None).is_err());
    }

    #[test]
    fn the_first_message_is_checked() {
        let cred = Credential::new(Mechanism::Sha512, "secret", ITERATIONS_MIN);
        let lookup = |u: &str| (u == "a,b").then(|| cred.clone());
        let mut s = Server::new(Mechanism::Sha512);
        let Step::Continue(first) = s.step(b"n,,n=a=2Cb,r=abc", lookup).unwrap() else {
            panic!("continues");
        };
        let first = String::from_utf8(first).unwrap();
        assert!(
            first.starts_with("r=abc") && first.contains(",i=4096"),
            "{first}"
        );
        for bad in [
            &b"p=tls-unique,,n=a,r=x"[..],
            b"n,,n=nobody,r=x",
            b"n,,r=x",
            b"n,a=other,n=a=2Cb,r=x",
            b"n,,n=a=2Cb,r=x,tokenauth=true",
            b"\xff",
        ] {
            assert!(
                Server::new(Mechanism::Sha512).step(bad, lookup).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn plain_is_checked_against_the_stored_credential() {
        let cred = Credential::new(Mechanism::Sha256, "secret", ITERATIONS_MIN);
        assert!(cred.matches(Mechanism::Sha256, "secret"));
        assert!(!cred.matches(Mechanism::Sha256, "Secret"));
        assert_eq!(
            parse_plain(b"\0alice\0pw").unwrap(),
            ("alice".into(), "pw".into())
        );
        assert_eq!(parse_plain(b"alice\0alice\0pw").unwrap().0, "alice");
        assert!(parse_plain(b"bob\0alice\0pw").is_err());
        assert!(parse_plain(b"\0alice\0").is_err());
        assert!(parse_plain(b"alice\0pw").is_err());
        assert_eq!(check_iterations(4096), Ok(4096));
        assert!(check_iterations(4095).is_err());
        assert!(check_iterations(-1).is_err());
    }
}
