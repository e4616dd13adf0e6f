//! TLS for SSL and SASL_SSL listeners: rustls on the ring provider, the
//! certificate chain and key from PEM files, and with a client CA the
//! client's certificate required and its subject taken as the principal
//! (`User:CN=...,O=...`, RFC 2253 order, as Kafka names it).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;

/// The server's TLS set-up, from `--tls-cert`, `--tls-key` and
/// `--tls-client-ca`.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let chain = certificates(&read(cert)?).map_err(|e| format!("{}: {e}", cert.display()))?;
    let key_der = PrivateKeyDer::from_pem_slice(&read(key)?)
        .map_err(|e| format!("{}: no private key in it ({e})", key.display()))?;
    // ring's provider (no cmake or system library to build); it lacks
    // only the post-quantum key exchanges, which Kafka clients do not
    // ask for.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certificates(&read(ca)?).map_err(|e| format!("{}: {e}", ca.display()))? {
                roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key_der)
        .map_err(|e| format!("{} and {}: {e}", cert.display(), key.display()))?;
    // Kafka clients send no ALPN; nothing to negotiate.
    config.alpn_protocols.clear();
    Ok(Arc::new(config))
}

/// Every certificate in a PEM file; at least one.
fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM certificates ({e})"))?;
    if certs.is_empty() {
        return Err("no certificate in it".into());
    }
    Ok(certs)
}

/// The principal a client certificate names: `User:` and its subject in
/// RFC 2253 form (last RDN first, `,` between them, `+` within one).
pub fn principal(cert: &[u8]) -> Result<String, String> {
    use x509_parser::objects::{oid2abbrev, oid_registry};
    let (_, c) = x509_parser::parse_x509_certificate(cert).map_err(|e| e.to_string())?;
    let rdns: Vec<String> = c
        .subject()
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|a| {
                    let name = oid2abbrev(a.attr_type(), oid_registry())
                        .map(str::to_string)
                        .unwrap_or_else(|_| a.attr_type().to_id_string());
                    let value = a
                        .as_str()
                        .map(escape)
                        .unwrap_or_else(|_| String::from_utf8_lossy(a.as_slice()).into_owned());
                    format!("{name}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    Ok(format!(
        "User:{}",
        rdns.into_iter().rev().collect::<Vec<_>>().join(",")
    ))
}

/// RFC 2253 escaping of an attribute value.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, ch) in v.chars().enumerate() {
        let edge =
            (i == 0 && (ch == ' ' || ch == '#')) || (i + 1 == v.chars().count() && ch == ' ');
        if edge || matches!(ch, ',' | '+' | '"' | '\\' | '<' | '>' | ';') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with_subject(dn: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in dn {
            params.distinguished_name.push(t.clone(), *v);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_client_certificate_names_its_principal_as_kafka_does() {
        let der = cert_with_subject(&[
            (rcgen::DnType::CountryName, "NL"),
            (rcgen::DnType::OrganizationName, "sluice, inc"),
            (rcgen::DnType::CommonName, "writer"),
        ]);
        assert_eq!(
            principal(&der).unwrap(),
            "User:CN=writer,O=sluice\\, inc,C=NL"
        );
        assert!(principal(b"not a certificate").is_err());
    }

    #[test]
    fn missing_or_wrong_files_are_named() {
        let dir = crate::test_support::tempdir("tls-");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        assert!(server_config(&c, &k, None).is_ok());
        assert!(server_config(&c, &k, Some(&c)).is_ok());
        let e = server_config(&k, &k, None).unwrap_err();
        assert!(e.contains("no certificate"), "{e}");
        let e = server_config(&c, &c, None).unwrap_err();
        assert!(e.contains("no private key"), "{e}");
        let e = server_config(&dir.path().join("none"), &k, None).unwrap_err();
        assert!(e.contains("none"), "{e}");
    }
}
