//! Delivered on the first try, with the headers and signatures of the wire contract.

use std::sync::Arc;

use flock_delivery::{DeliveryState, ErrorKind, USER_AGENT};
use flock_signing::{DEFAULT_TOLERANCE, verify_flock_signature, verify_standard};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

use crate::receiver::Receiver;
use crate::{Harness, delivery, one_attempt_config, test_config};

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[tokio::test]
async fn delivered_on_the_first_try_with_both_signatures_verified() {
    let receiver = Receiver::ok().await;
    let harness = Harness::start(test_config());
    for secret in [WHSEC, "a plain secret"] {
        let before = OffsetDateTime::now_utc().unix_timestamp();
        let d = delivery(&receiver.url("/hook?token=t1"), Some(secret));
        let body = d.body.clone();
        let id = harness.enqueue(d).await;
        let view = harness.finished(id).await;
        let after = OffsetDateTime::now_utc().unix_timestamp();

        assert_eq!(view.state, DeliveryState::Delivered);
        assert_eq!(view.failure, None);
        assert_eq!(view.attempts.len(), 1);
        let attempt = &view.attempts[0];
        assert_eq!(attempt.number, 1);
        assert_eq!(attempt.status_code, Some(200));
        assert_eq!(attempt.error_kind, None);
        assert_eq!(attempt.error, None);
        assert!(view.completed_at.is_some());
        assert_eq!(view.url, receiver.url("/hook"), "shown without the query");

        let requests = receiver.requests();
        let request = requests.last().unwrap();
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/hook");
        assert_eq!(request.body, body, "the stored body, byte for byte");
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header("user-agent"), Some(USER_AGENT));
        let host = format!("127.0.0.1:{}", receiver.port());
        assert_eq!(request.header("host"), Some(host.as_str()));
        assert!(USER_AGENT.starts_with("flock-webhooks/"));
        let webhook_id = request.header("webhook-id").unwrap();
        assert_eq!(webhook_id, id.to_string());
        let timestamp = request.header("webhook-timestamp").unwrap();
        let seconds: i64 = timestamp.parse().unwrap();
        assert!((before..=after).contains(&seconds));

        let flock = request
            .header("x-flock-signature")
            .expect("X-Flock-Signature");
        verify_flock_signature(flock, &request.body, secret.as_bytes()).unwrap();
        let standard = request
            .header("webhook-signature")
            .expect("webhook-signature");
        verify_standard(
            secret,
            webhook_id,
            timestamp,
            standard,
            &request.body,
            DEFAULT_TOLERANCE,
        )
        .unwrap();
    }
    assert_eq!(receiver.requests().len(), 2);
}

#[tokio::test]
async fn an_https_webhook_is_sent_over_tls() {
    // A listener that reads what the client sends first: a TLS record (handshake, version 3.x),
    // not an HTTP request line. It then closes, so the attempt fails while connecting.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let first_bytes = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut head = [0u8; 3];
        std::io::Read::read_exact(&mut stream, &mut head).unwrap();
        head
    });
    let harness = Harness::start(one_attempt_config());
    let url = format!("https://127.0.0.1:{port}/hook");
    let id = harness.enqueue(delivery(&url, Some(WHSEC))).await;
    let view = harness.finished(id).await;
    let head = first_bytes.join().unwrap();
    assert_eq!(head[0], 0x16, "a TLS handshake record, not {head:?}");
    assert_eq!(head[1], 0x03);
    assert_eq!(view.state, DeliveryState::Failed);
    let attempt = &view.attempts[0];
    assert_eq!(attempt.error_kind, Some(ErrorKind::Connect), "{attempt:?}");
    assert_eq!(attempt.status_code, None);
}

#[tokio::test]
async fn a_receiver_whose_certificate_is_not_trusted_is_a_connect_error_that_says_so() {
    // A TLS receiver on loopback with a self-signed certificate for localhost and 127.0.0.1
    // (a fixture that no operating system trusts, made for this test with `openssl req -x509`,
    // P-256, CA:FALSE, valid for 100 years): the handshake reaches the certificate and stops
    // there, and the attempt names why without naming an address.
    let certs = vec![CertificateDer::from_pem_slice(include_bytes!("tls/test-cert.pem")).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(include_bytes!("tls/test-key.pem")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let mut tls = rustls::ServerConnection::new(Arc::new(config)).unwrap();
        // The client gives up on the certificate, so the handshake ends in an error here.
        while tls.is_handshaking() {
            if tls.complete_io(&mut socket).is_err() {
                break;
            }
        }
        tls.is_handshaking()
    });
    let harness = Harness::start(one_attempt_config());
    let id = harness
        .enqueue(delivery(
            &format!("https://localhost:{port}/hook"),
            Some(WHSEC),
        ))
        .await;
    let view = harness.finished(id).await;
    assert!(server.join().unwrap(), "the handshake never completed");
    assert_eq!(view.state, DeliveryState::Failed);
    let attempt = &view.attempts[0];
    assert_eq!(attempt.error_kind, Some(ErrorKind::Connect), "{attempt:?}");
    // Which check refuses it depends on the machine's trusted roots (an unknown issuer, or a
    // root of the same name whose key does not fit); either way it is the certificate.
    let error = attempt.error.as_deref().unwrap();
    assert!(
        error.starts_with("could not connect: the receiver's TLS certificate "),
        "{error}"
    );
    assert!(
        !error.contains("127.0.0.1") && !error.contains("localhost"),
        "{error}"
    );
}

#[tokio::test]
async fn no_signature_headers_without_a_secret() {
    let receiver = Receiver::ok().await;
    let harness = Harness::start(test_config());
    let id = harness
        .enqueue(delivery(&receiver.url("/plain"), None))
        .await;
    let view = harness.finished(id).await;
    assert_eq!(view.state, DeliveryState::Delivered);

    let request = &receiver.requests()[0];
    assert!(request.headers.get("x-flock-signature").is_none());
    assert!(request.headers.get("webhook-signature").is_none());
    assert_eq!(request.header("webhook-id"), Some(id.to_string().as_str()));
    assert!(request.header("webhook-timestamp").is_some());
    assert_eq!(request.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn the_body_is_the_wire_contract_payload() {
    let receiver = Receiver::ok().await;
    let harness = Harness::start(test_config());
    let d = delivery(&receiver.url("/hook"), None);
    let (correlation_id, artifact_id) = (d.correlation_id, d.artifact_id);
    let id = harness.enqueue(d).await;
    harness.finished(id).await;

    let body: serde_json::Value = serde_json::from_slice(&receiver.requests()[0].body).unwrap();
    assert_eq!(body["event_type"], "artifact.created");
    assert_eq!(body["correlation_id"], correlation_id.to_string());
    assert_eq!(body["sequence"], 1);
    assert_eq!(body["artifact"]["id"], artifact_id.to_string());
    assert_eq!(body["artifact"]["payload"]["text"], "hello");
}

#[test]
fn a_secret_that_cannot_sign_cannot_make_a_delivery() {
    // What used to fail each attempt (a `whsec_` secret that is not base64) is refused where the
    // text becomes a secret, so every delivery's secret signs.
    for text in ["whsec_not*base64!", "whsec_"] {
        let err = flock_models::Secret::new(text).unwrap_err();
        assert!(err.message().contains("`whsec_`"), "{text}: {err}");
        let err =
            flock_models::WebhookConfig::new("https://example.com/hook", Some(text)).unwrap_err();
        assert_eq!(err.field_name(), Some("secret"), "{text}: {err}");
    }
}
