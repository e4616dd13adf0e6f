//! Security with a real client (librdkafka through the rdkafka crate):
//! listeners of every protocol on one broker, TLS, SASL PLAIN and
//! SCRAM-SHA-256/512 over TLS and plaintext, users made offline and
//! through the running broker, wrong passwords and unauthenticated
//! requests refused, mutual TLS.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::wire::Wire;
use common::{free_port, run_sluice, tempdir, Broker};
use kafka_protocol::messages::{ApiKey, MetadataRequest};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

/// A CA, a server certificate for 127.0.0.1 and a client certificate,
/// as PEM files.
struct Certs {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Certs {
    fn make(dir: &Path) -> Certs {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "sluice test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let leaf = |names: Vec<String>, cn: &str| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(names).unwrap();
            // Encoded in this order: O, then CN (RFC 2253 names it
            // CN=...,O=...).
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.distinguished_name
                .push(DnType::OrganizationName, "sluice");
            p.distinguished_name.push(DnType::CommonName, cn);
            let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) =
            leaf(vec!["127.0.0.1".into(), "localhost".into()], "broker");
        let (client_cert, client_key) = leaf(vec![], "writer");
        let write = |name: &str, pem: &str| {
            let p = dir.join(name);
            std::fs::write(&p, pem).unwrap();
            p
        };
        Certs {
            ca: write("ca.pem", &ca_cert.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
        }
    }
}

fn client(port: u16, settings: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", format!("127.0.0.1:{port}"))
        .set("socket.timeout.ms", "10000")
        .set("message.timeout.ms", "20000");
    for (k, v) in settings {
        c.set(*k, *v);
    }
    c
}

/// Produces `n` records to partition 0 of `topic` and reads them back.
fn round_trip(port: u16, settings: &[(&str, &str)], topic: &str, n: usize) {
    let producer: BaseProducer = client(port, settings).create().unwrap();
    let sent: Vec<String> = (0..n).map(|i| format!("{topic}-{i}")).collect();
    for s in &sent {
        producer
            .send(BaseRecord::<(), _>::to(topic).partition(0).payload(s))
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let consumer: BaseConsumer = client(port, settings)
        .set("group.id", format!("g-{topic}"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < n && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(500)) {
            let m = m.unwrap();
            got.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
        }
    }
    assert_eq!(got, sent, "{settings:?}");
}

/// Whether a client with these settings can read the cluster's metadata.
/// (A refused client waits out the timeout: librdkafka retries.)
fn reaches(port: u16, settings: &[(&str, &str)]) -> bool {
    fetches_metadata(port, settings, Duration::from_secs(20))
}

/// A client that should be refused: given 3 s (the broker's log or a
/// check with the right settings shows why it was).
fn refused(port: u16, settings: &[(&str, &str)]) -> bool {
    !fetches_metadata(port, settings, Duration::from_secs(3))
}

fn fetches_metadata(port: u16, settings: &[(&str, &str)], wait: Duration) -> bool {
    let producer: BaseProducer = client(port, settings).create().unwrap();
    producer.client().fetch_metadata(None, wait).is_ok()
}

/// The harness's broker with `--listen LISTEN` in place of its own
/// (`port` is the one the harness talks to), started.
fn secured_broker(data: &Path, cores: usize, port: u16, listen: &str, extra: &[&str]) -> Broker {
    let harness = Broker::command(data, cores, port, extra, &[]);
    let mut cmd = std::process::Command::new(common::BIN);
    let mut args = harness.get_args().map(|a| a.to_string_lossy().into_owned());
    while let Some(a) = args.next() {
        if a == "--listen" {
            args.next();
            cmd.args(["--listen", listen]);
        } else {
            cmd.arg(a);
        }
    }
    cmd.envs(harness.get_envs().filter_map(|(k, v)| Some((k, v?))));
    let mut b = Broker::spawn_command(cmd, port);
    assert!(b.wait_for("sluice: serving"), "{:#?}", b.seen);
    b
}

/// A SCRAM-SHA-256 client of a SASL_PLAINTEXT listener.
fn scram_256(user: &'static str, password: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanisms", "SCRAM-SHA-256"),
        ("sasl.username", user),
        ("sasl.password", password),
    ]
}

fn sluice_ok(args: &[&str]) -> String {
    let (code, out, err) = run_sluice(args, None);
    assert_eq!(code, 0, "sluice {args:?}: {out}{err}");
    out
}

// Proves one broker serves PLAINTEXT, SSL, SASL_PLAINTEXT and SASL_SSL
// listeners at once, that librdkafka produces and consumes through SSL
// and through each SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)
// over both SASL listeners, with users made offline before the start
// and through the running broker, and that a wrong password, a deleted
// user and a request before authentication are refused.
#[test]
fn every_mechanism_over_tls_and_plaintext() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let certs = Certs::make(dir.path());
    let data_s = data.to_str().unwrap();
    // The first user, while no broker runs.
    sluice_ok(&[
        "user",
        "create",
        "admin",
        "--password",
        "admin-secret",
        "--data-dir",
        data_s,
    ]);
    let stored = std::fs::read_to_string(data.join("sluice-security.json")).unwrap();
    assert!(!stored.contains("admin-secret"), "{stored}");

    let (plain, ssl, sasl, sasl_ssl) = (free_port(), free_port(), free_port(), free_port());
    let listeners = format!(
        "PLAINTEXT://127.0.0.1:{plain},SSL://127.0.0.1:{ssl},\
         SASL_PLAINTEXT://127.0.0.1:{sasl},SASL_SSL://127.0.0.1:{sasl_ssl}"
    );
    let tls_args = [
        "--tls-cert",
        certs.server_cert.to_str().unwrap(),
        "--tls-key",
        certs.server_key.to_str().unwrap(),
    ];
    let mut b = secured_broker(&data, 2, plain, &listeners, &tls_args);

    // A running broker's data directory is not changed behind its back.
    let (code, _, err) = run_sluice(
        &[
            "user",
            "create",
            "x",
            "--password",
            "p",
            "--data-dir",
            data_s,
        ],
        None,
    );
    assert_ne!(code, 0);
    assert!(err.contains("in use by a running broker"), "{err}");

    let boot = format!("127.0.0.1:{plain}");
    for m in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
        sluice_ok(&[
            "user",
            "create",
            "alice",
            "--password",
            "alice-secret",
            "--mechanism",
            m,
            "--bootstrap",
            &boot,
        ]);
    }
    // Every authenticated principal may use every topic and group here
    // (ACLs are the next test's subject).
    for resource in ["--topic", "--group"] {
        sluice_ok(&[
            "acl",
            "create",
            "--principal",
            "User:*",
            "--operation",
            "all",
            resource,
            "*",
            "--bootstrap",
            &boot,
        ]);
    }
    let listed = sluice_ok(&["user", "list", "--bootstrap", &boot]);
    for want in ["admin", "alice", "SCRAM-SHA-256", "SCRAM-SHA-512", "8192"] {
        assert!(listed.contains(want), "{listed}");
    }

    let tls = [
        ("ssl.ca.location", certs.ca.to_str().unwrap()),
        ("ssl.endpoint.identification.algorithm", "https"),
    ];
    let mut n = 0;
    for (protocol, port) in [("SASL_PLAINTEXT", sasl), ("SASL_SSL", sasl_ssl)] {
        for mech in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
            let mut s = vec![
                ("security.protocol", protocol),
                ("sasl.mechanisms", mech),
                ("sasl.username", "alice"),
                ("sasl.password", "alice-secret"),
            ];
            if protocol == "SASL_SSL" {
                s.extend(tls);
            }
            n += 1;
            round_trip(port, &s, &format!("t{n}"), 25);
            let wrong: Vec<_> = s
                .iter()
                .map(|&(k, v)| (k, if k == "sasl.password" { "wrong" } else { v }))
                .collect();
            assert!(
                refused(port, &wrong),
                "{protocol} {mech}: a wrong password was taken"
            );
            assert!(
                reaches(port, &s),
                "{protocol} {mech}: the right password after a wrong one"
            );
        }
    }
    assert!(b.wait_for("SASL authentication failed"), "{:#?}", b.seen);
    let mut s = vec![("security.protocol", "SSL")];
    s.extend(tls);
    round_trip(ssl, &s, "over-ssl", 25);
    // TLS with a CA that did not sign the broker's certificate fails.
    let other = tempdir();
    let other_certs = Certs::make(other.path());
    let bad_ca = [
        ("security.protocol", "SSL"),
        ("ssl.ca.location", other_certs.ca.to_str().unwrap()),
    ];
    assert!(refused(ssl, &bad_ca));

    // A request before authentication closes the connection.
    let mut w = Wire::connect(sasl);
    w.send(ApiKey::Metadata, 9, &MetadataRequest::default());
    assert!(
        w.closed(),
        "a SASL listener answered Metadata before authentication"
    );

    // A deleted user cannot authenticate any more.
    sluice_ok(&["user", "delete", "alice", "--bootstrap", &boot]);
    let s = [
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanisms", "SCRAM-SHA-256"),
        ("sasl.username", "alice"),
        ("sasl.password", "alice-secret"),
    ];
    assert!(refused(sasl, &s));
    let admin = [
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanisms", "SCRAM-SHA-256"),
        ("sasl.username", "admin"),
        ("sasl.password", "admin-secret"),
    ];
    assert!(reaches(sasl, &admin));
    b.stop();

    // Users survive a restart.
    let listed = sluice_ok(&["user", "list", "--data-dir", data_s]);
    assert!(
        listed.contains("admin") && !listed.contains("alice"),
        "{listed}"
    );
}

// Proves that with --tls-client-ca a TLS client must present a
// certificate the CA signed, and that its subject is its principal: it
// is refused a produce until an ACL names that subject, then produces
// and consumes; without a certificate it is refused.
#[test]
fn mutual_tls_requires_a_signed_client_certificate() {
    let dir = tempdir();
    let certs = Certs::make(dir.path());
    let port = free_port();
    let args = [
        "--tls-cert",
        certs.server_cert.to_str().unwrap(),
        "--tls-key",
        certs.server_key.to_str().unwrap(),
        "--tls-client-ca",
        certs.ca.to_str().unwrap(),
    ];
    let admin = free_port();
    let listen = format!("SSL://127.0.0.1:{port},PLAINTEXT://127.0.0.1:{admin}");
    let mut b = secured_broker(&dir.path().join("data"), 1, port, &listen, &args);
    let ca = certs.ca.to_str().unwrap();
    let with_cert = [
        ("security.protocol", "SSL"),
        ("ssl.ca.location", ca),
        (
            "ssl.certificate.location",
            certs.client_cert.to_str().unwrap(),
        ),
        ("ssl.key.location", certs.client_key.to_str().unwrap()),
    ];
    // The certificate's subject is the principal the ACLs name.
    let (ok, errors) = produce(port, &with_cert, "mtls", 2);
    assert_eq!(ok, 0, "produced without an ACL");
    assert!(
        errors.iter().all(|e| e.contains("authorization failed")),
        "{errors:?}"
    );
    let admin_boot = format!("127.0.0.1:{admin}");
    for resource in [["--topic", "mtls"], ["--group", "g-mtls"]] {
        sluice_ok(
            &[
                &[
                    "acl",
                    "create",
                    "--principal",
                    "User:CN=writer,O=sluice",
                    "--operation",
                    "all",
                ][..],
                &resource[..],
                &["--bootstrap", &admin_boot][..],
            ]
            .concat(),
        );
    }
    round_trip(port, &with_cert, "mtls", 10);
    assert!(refused(
        port,
        &[("security.protocol", "SSL"), ("ssl.ca.location", ca)]
    ));
    b.stop();
}

/// Delivery errors of a producer.
#[derive(Default, Clone)]
struct Deliveries(std::sync::Arc<std::sync::Mutex<(usize, Vec<String>)>>);

impl rdkafka::ClientContext for Deliveries {}
impl rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        let mut d = self.0.lock().unwrap();
        match r {
            Ok(_) => d.0 += 1,
            Err((e, _)) => d.1.push(e.to_string()),
        }
    }
}

/// Produces `n` records; returns (delivered, errors).
fn produce(port: u16, settings: &[(&str, &str)], topic: &str, n: usize) -> (usize, Vec<String>) {
    let ctx = Deliveries::default();
    let p: BaseProducer<Deliveries> = client(port, settings)
        .set("message.timeout.ms", "10000")
        .create_with_context(ctx.clone())
        .unwrap();
    for i in 0..n {
        let v = format!("{topic}-{i}");
        p.send(BaseRecord::<(), _>::to(topic).partition(0).payload(&v))
            .unwrap();
    }
    let _ = p.flush(Duration::from_secs(20));
    let d = ctx.0.lock().unwrap().clone();
    d
}

/// The errors a consumer's polls give within `wait` (and how many
/// records it got).
fn consume_errors(
    port: u16,
    settings: &[(&str, &str)],
    topic: &str,
    group: Option<&str>,
    wait: Duration,
) -> (usize, Vec<String>) {
    let consumer: BaseConsumer = client(port, settings)
        .set("group.id", group.unwrap_or("unused-group"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    match group {
        Some(_) => consumer.subscribe(&[topic]).unwrap(),
        None => {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, 0, Offset::Beginning)
                .unwrap();
            consumer.assign(&tpl).unwrap();
        }
    }
    let (mut got, mut errors) = (0, Vec::new());
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(_)) => got += 1,
            Some(Err(e)) => errors.push(e.to_string()),
            None => {}
        }
    }
    (got, errors)
}

fn topics_seen(port: u16, settings: &[(&str, &str)]) -> Vec<String> {
    let p: BaseProducer = client(port, settings).create().unwrap();
    let m = p
        .client()
        .fetch_metadata(None, Duration::from_secs(20))
        .unwrap();
    let mut t: Vec<String> = m.topics().iter().map(|t| t.name().to_string()).collect();
    t.sort();
    t
}

fn create_topic(port: u16, settings: &[(&str, &str)], name: &str) -> Result<(), String> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        client(port, settings).create().unwrap();
    let t = NewTopic::new(name, 1, TopicReplication::Fixed(1));
    let r = futures_lite::future::block_on(admin.create_topics(&[t], &AdminOptions::new()))
        .map_err(|e| e.to_string())?;
    match &r[0] {
        Ok(_) => Ok(()),
        Err((_, code)) => Err(format!("{code:?}")),
    }
}

// Proves ACLs are enforced on an authenticated listener with librdkafka:
// a principal without ACLs is refused on produce, fetch, group join and
// topic creation and sees no topic in Metadata; one with ACLs (a prefix
// for topics, a literal group) produces, consumes in its group and sees
// only its topics; a DENY wins over an ALLOW; a super user needs no
// ACL; `sluice acl` creates, lists and deletes them; and they survive a
// restart.
#[test]
fn acls_allow_deny_and_filter_what_clients_see() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let (plain, sasl) = (free_port(), free_port());
    let data_s = data.to_str().unwrap();
    for (user, password) in [("admin", "a-pw"), ("alice", "b-pw"), ("mallory", "c-pw")] {
        sluice_ok(&[
            "user",
            "create",
            user,
            "--password",
            password,
            "--data-dir",
            data_s,
        ]);
    }
    let listen = format!("PLAINTEXT://127.0.0.1:{plain},SASL_PLAINTEXT://127.0.0.1:{sasl}");
    let mut b = secured_broker(&data, 2, plain, &listen, &["--super-users", "admin"]);
    let boot = format!("127.0.0.1:{plain}");
    let admin = scram_256("admin", "a-pw");
    let alice = scram_256("alice", "b-pw");
    let mallory = scram_256("mallory", "c-pw");

    // A super user needs no ACL.
    for t in ["app-orders", "app-frozen", "secret"] {
        create_topic(sasl, &admin, t).unwrap();
    }
    assert_eq!(produce(sasl, &admin, "secret", 5), (5, vec![]));

    // ACLs through the CLI (over the PLAINTEXT listener).
    sluice_ok(&[
        "acl",
        "create",
        "--principal",
        "alice",
        "--operation",
        "read",
        "--operation",
        "write",
        "--topic",
        "app-",
        "--prefixed",
        "--bootstrap",
        &boot,
    ]);
    sluice_ok(&[
        "acl",
        "create",
        "--principal",
        "User:alice",
        "--operation",
        "read",
        "--group",
        "app-group",
        "--bootstrap",
        &boot,
    ]);
    sluice_ok(&[
        "acl",
        "create",
        "--principal",
        "alice",
        "--operation",
        "write",
        "--deny",
        "--topic",
        "app-frozen",
        "--bootstrap",
        &boot,
    ]);
    let listed = sluice_ok(&["acl", "list", "--bootstrap", &boot]);
    for want in [
        "PREFIXED",
        "app-",
        "app-group",
        "DENY",
        "User:alice",
        "WRITE",
    ] {
        assert!(listed.contains(want), "{listed}");
    }
    assert_eq!(listed.lines().count(), 1 + 4, "{listed}");

    // Mallory, with no ACL: refused everywhere, sees nothing.
    let (ok, errors) = produce(sasl, &mallory, "app-orders", 3);
    assert_eq!(ok, 0);
    assert!(
        errors.iter().all(|e| e.contains("authorization failed")) && errors.len() == 3,
        "{errors:?}"
    );
    let (got, errors) = consume_errors(sasl, &mallory, "secret", None, Duration::from_secs(4));
    assert_eq!(got, 0, "a fetch without READ returned records");
    assert!(
        errors.iter().any(|e| e.contains("authorization failed")),
        "{errors:?}"
    );
    let (got, errors) = consume_errors(
        sasl,
        &mallory,
        "app-orders",
        Some("app-group"),
        Duration::from_secs(4),
    );
    assert_eq!(got, 0);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("Group authorization failed")),
        "{errors:?}"
    );
    let e = create_topic(sasl, &mallory, "mallory-topic").unwrap_err();
    assert!(e.contains("TopicAuthorizationFailed"), "{e}");
    assert!(topics_seen(sasl, &mallory).is_empty());

    // Alice: her prefix and her group.
    assert_eq!(produce(sasl, &alice, "app-orders", 10), (10, vec![]));
    let (got, errors) = consume_errors(
        sasl,
        &alice,
        "app-orders",
        Some("app-group"),
        Duration::from_secs(8),
    );
    assert_eq!(got, 10, "{errors:?}");
    let (ok, errors) = produce(sasl, &alice, "app-frozen", 2);
    assert_eq!(ok, 0, "a DENY is overridden");
    assert!(
        errors.iter().all(|e| e.contains("authorization failed")),
        "{errors:?}"
    );
    assert_eq!(topics_seen(sasl, &alice), ["app-frozen", "app-orders"]);
    let (got, _) = consume_errors(sasl, &alice, "secret", None, Duration::from_secs(3));
    assert_eq!(got, 0);
    // The PLAINTEXT listener has no security: everything is there.
    assert_eq!(
        topics_seen(plain, &[]),
        ["app-frozen", "app-orders", "secret"]
    );

    // Deleting the DENY lets alice write there.
    let out = sluice_ok(&[
        "acl",
        "delete",
        "--principal",
        "alice",
        "--topic",
        "app-frozen",
        "--bootstrap",
        &boot,
    ]);
    assert!(out.contains("deleted 1"), "{out}");
    assert_eq!(produce(sasl, &alice, "app-frozen", 2), (2, vec![]));
    b.stop();

    // ACLs are stored with the users.
    let mut b = secured_broker(&data, 2, plain, &listen, &["--super-users", "admin"]);
    let listed = sluice_ok(&["acl", "list", "--bootstrap", &boot]);
    assert_eq!(listed.lines().count(), 1 + 3, "{listed}");
    assert!(topics_seen(sasl, &mallory).is_empty());
    b.stop();
}

// Proves users and ACLs are the cluster's, not a node's: the first user,
// written offline into one node's data directory, seeds the cluster's and
// authenticates on another node; a user created through one node
// authenticates on another; an ACL created through a third node lets
// that user produce through the first; clients are told each node's
// SASL_PLAINTEXT address when they connect through that listener.
#[test]
fn users_and_acls_are_the_clusters() {
    use common::cluster::cluster_spec;
    let dir = tempdir();
    let ids = [1, 2, 3];
    let repl: Vec<(i32, u16)> = ids.iter().map(|&i| (i, free_port())).collect();
    let spec = cluster_spec(&repl);
    let plain: Vec<u16> = ids.iter().map(|_| free_port()).collect();
    let sasl: Vec<u16> = ids.iter().map(|_| free_port()).collect();
    let data: Vec<PathBuf> = ids
        .iter()
        .map(|i| dir.path().join(format!("node-{i}")))
        .collect();
    sluice_ok(&[
        "user",
        "create",
        "admin",
        "--password",
        "a-pw",
        "--data-dir",
        data[0].to_str().unwrap(),
    ]);
    let mut nodes = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let listen = format!(
            "PLAINTEXT://127.0.0.1:{},SASL_PLAINTEXT://127.0.0.1:{}",
            plain[i], sasl[i]
        );
        let id = id.to_string();
        nodes.push(secured_broker(
            &data[i],
            1,
            plain[i],
            &listen,
            &[
                "--node-id",
                &id,
                "--cluster",
                &spec,
                "--election-timeout-ms",
                "300",
                "--idle-poll-us",
                "0",
                "--super-users",
                "admin",
            ],
        ));
    }
    let admin = scram_256("admin", "a-pw");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !reaches(sasl[2], &admin) {
        assert!(
            Instant::now() < deadline,
            "node 1's first user never reached node 3"
        );
    }
    sluice_ok(&[
        "user",
        "create",
        "alice",
        "--password",
        "b-pw",
        "--bootstrap",
        &format!("127.0.0.1:{}", plain[1]),
    ]);
    let alice = scram_256("alice", "b-pw");
    assert!(
        reaches(sasl[2], &alice),
        "a user made through node 2 on node 3"
    );
    create_topic(sasl[0], &admin, "shared").unwrap();
    let (ok, errors) = produce(sasl[0], &alice, "shared", 3);
    assert_eq!(ok, 0, "produced without an ACL");
    assert!(
        errors.iter().all(|e| e.contains("authorization failed")),
        "{errors:?}"
    );
    sluice_ok(&[
        "acl",
        "create",
        "--principal",
        "alice",
        "--operation",
        "write",
        "--topic",
        "shared",
        "--bootstrap",
        &format!("127.0.0.1:{}", plain[2]),
    ]);
    assert_eq!(produce(sasl[0], &alice, "shared", 5), (5, vec![]));
    // The metadata answer names every node at its SASL_PLAINTEXT port.
    let p: BaseProducer = client(sasl[0], &admin).create().unwrap();
    let m = p
        .client()
        .fetch_metadata(None, Duration::from_secs(20))
        .unwrap();
    let mut ports: Vec<u16> = m.brokers().iter().map(|b| b.port() as u16).collect();
    ports.sort();
    let mut want = sasl.clone();
    want.sort();
    assert_eq!(ports, want);
    let listed = sluice_ok(&[
        "user",
        "list",
        "--bootstrap",
        &format!("127.0.0.1:{}", plain[0]),
    ]);
    assert!(
        listed.contains("admin") && listed.contains("alice"),
        "{listed}"
    );
    for mut n in nodes {
        n.stop();
    }
}

// Proves KIP-368 with librdkafka: with a 2 s session lifetime, a producer
// sending for 7 s re-authenticates on its connection before each session
// ends (the broker never closes it for an expired session), as the same
// principal, and every message is delivered.
#[test]
fn clients_re_authenticate_before_their_session_ends() {
    let dir = tempdir();
    let data = dir.path().join("data");
    sluice_ok(&[
        "user",
        "create",
        "alice",
        "--password",
        "b-pw",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let (plain, sasl) = (free_port(), free_port());
    let listen = format!("PLAINTEXT://127.0.0.1:{plain},SASL_PLAINTEXT://127.0.0.1:{sasl}");
    let mut b = secured_broker(
        &data,
        1,
        plain,
        &listen,
        &[
            "--super-users",
            "alice",
            "--sasl-session-lifetime-ms",
            "2000",
        ],
    );
    let ctx = Deliveries::default();
    let p: BaseProducer<Deliveries> = client(sasl, &scram_256("alice", "b-pw"))
        .set("linger.ms", "0")
        .create_with_context(ctx.clone())
        .unwrap();
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(7) {
        let v = format!("m-{sent}");
        p.send(BaseRecord::<(), _>::to("sessions").partition(0).payload(&v))
            .unwrap();
        sent += 1;
        p.poll(Duration::from_millis(50));
    }
    p.flush(Duration::from_secs(20)).unwrap();
    let (ok, errors) = ctx.0.lock().unwrap().clone();
    assert_eq!((ok, errors), (sent, vec![]));
    b.stop();
    let log = b.seen.join("\n");
    assert!(!log.contains("SASL session expired"), "{log}");
    assert!(log.contains("re-authenticated"), "{log}");
}

/// Writes `frame` over TLS in pieces of varied sizes (a record or more
/// each), pausing now and then and before its last few bytes, as a slow
/// or a record-at-a-time client sends a large request.
fn send_in_pieces(
    tls: &mut rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
    frame: &[u8],
    seed: u64,
) {
    use std::io::Write;
    let mut rng = common::Rng(seed);
    let (body, tail) = frame.split_at(frame.len() - 7);
    let mut at = 0;
    while at < body.len() {
        let n = (1 + rng.below(40_000)).min(body.len() - at);
        tls.write_all(&body[at..at + n]).unwrap();
        tls.flush().unwrap();
        at += n;
        if rng.chance(100) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    tls.write_all(tail).unwrap();
    tls.flush().unwrap();
}

// Large requests over TLS that arrive a little at a time, down to a last
// few bytes after a pause, are read whole and answered: the broker's wait
// for the rest of a frame (which asks the socket to collect most of it
// first) always ends once the frame's bytes are in.
#[test]
fn large_requests_arrive_whole_over_tls_in_slow_pieces() {
    use kafka_protocol::messages::ProduceResponse;
    use kafka_protocol::protocol::Decodable;
    let dir = tempdir();
    let certs = Certs::make(dir.path());
    let (plain, ssl) = (free_port(), free_port());
    let listen = format!("PLAINTEXT://127.0.0.1:{plain},SSL://127.0.0.1:{ssl}");
    let (cert, key) = (
        certs.server_cert.to_str().unwrap(),
        certs.server_key.to_str().unwrap(),
    );
    let _b = secured_broker(
        &dir.path().join("data"),
        1,
        plain,
        &listen,
        &[
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--super-users",
            "User:ANONYMOUS",
        ],
    );
    let mut w = Wire::connect(plain);
    common::wire::create_topic(&mut w, "pieces", 1);

    // The broker's provider (ring), as its server side uses.
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_file_iter(&certs.ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let sock = std::net::TcpStream::connect(("127.0.0.1", ssl)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);

    // Frames under, near and well over the most the wait collects.
    let mut offset = 0i64;
    for (i, (count, size)) in [(40usize, 1000usize), (300, 1000), (900, 1000), (3, 100)]
        .into_iter()
        .enumerate()
    {
        let batch = sluice_storage::batch::build::uniform(count, size, 1_700_000_000_000);
        let req = common::wire::produce_request("pieces", 0, -1, batch);
        let frame = Wire::frame(ApiKey::Produce, 9, i as i32 + 1, &req);
        send_in_pieces(&mut tls, &frame, i as u64 + 7);
        let (id, mut b) = common::wire::read_response(&mut tls, ApiKey::Produce, 9)
            .unwrap_or_else(|e| panic!("no answer to a {} byte request: {e}", frame.len()));
        assert_eq!(id, i as i32 + 1);
        let r = ProduceResponse::decode(&mut b, 9).unwrap();
        let p = &r.responses[0].partition_responses[0];
        assert_eq!((p.error_code, p.base_offset), (0, offset), "request {i}");
        offset += count as i64;
    }
    let r: kafka_protocol::messages::ListOffsetsResponse = w.call(
        ApiKey::ListOffsets,
        6,
        &common::wire::list_offsets_request("pieces", 0, -1),
    );
    assert_eq!(r.topics[0].partitions[0].offset, offset);
}
