//! Integration tests of `flock-signing`: known answers, then every way a signature is refused,
//! then `verify_webhook` as a receiver calls it, then a sender's rotation (several signatures in
//! `webhook-signature`) checked here and by the `standardwebhooks` crate.

use std::collections::HashMap;
use std::time::Duration;

use flock_signing::{
    DEFAULT_TOLERANCE, KeyError, SigningKey, VerifyError, WebhookError, flock_signature_header,
    sign_payload, sign_standard, standard_key, standard_signatures, verify_flock_signature,
    verify_standard, verify_standard_at, verify_webhook, verify_webhook_at,
};

/// RFC 4231 section 4: HMAC-SHA256 test cases (key, data, expected hex).
#[test]
fn rfc4231_vectors() {
    let long_key = [0xaa_u8; 131];
    let key4: Vec<u8> = (1..=25).collect();
    let cases: [(&[u8], &[u8], &str); 6] = [
        (&[0x0b; 20], b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
        (
            b"Jefe",
            b"what do ya want for nothing?",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        ),
        (&[0xaa; 20], &[0xdd; 50], "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
        (&key4, &[0xcd; 50], "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
        (
            &long_key,
            b"Test Using Larger Than Block-Size Key - Hash Key First",
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        ),
        (
            &long_key,
            b"This is a test using a larger than block-size key and a larger than block-size data. \
The key needs to be hashed before being used by the HMAC algorithm.",
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
        ),
    ];
    for (key, data, expected) in cases {
        assert_eq!(sign_payload(data, key), expected);
        let header = flock_signature_header(data, key);
        assert_eq!(header, format!("sha256={expected}"));
        verify_flock_signature(&header, data, key).unwrap();
    }
    // Case 5 is defined truncated to 128 bits.
    let full = sign_payload(b"Test With Truncation", &[0x0c; 20]);
    assert!(
        full.starts_with("a3b6167473100ee06e0c796c2955552b"),
        "{full}"
    );
}

#[test]
fn flock_signature_is_64_lowercase_hex() {
    let sig = sign_payload(b"{}", b"secret");
    assert_eq!(sig.len(), 64);
    assert!(
        sig.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "{sig}"
    );
}

#[test]
fn flock_signature_rejections() {
    let body = br#"{"a":1}"#;
    let header = flock_signature_header(body, b"k");
    assert_eq!(
        verify_flock_signature(&header, br#"{"a":2}"#, b"k"),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        verify_flock_signature(&header, body, b"other"),
        Err(VerifyError::Mismatch)
    );
    // Upper-case hex of the right signature is still the right signature.
    let upper = format!("sha256={}", header["sha256=".len()..].to_uppercase());
    verify_flock_signature(&upper, body, b"k").unwrap();
    for malformed in [
        "",
        "sha256",
        "sha1=abcd",
        &header["sha256=".len()..],
        "sha256=abc",
        &format!("sha256={}", "zz".repeat(32)),
        &format!("{header}00"),
    ] {
        let err = verify_flock_signature(malformed, body, b"k").unwrap_err();
        assert!(
            matches!(err, VerifyError::MalformedHeader(_)),
            "{malformed:?}: {err:?}"
        );
    }
}

const KA_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const KA_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const KA_TS: i64 = 1_614_265_330;
const KA_BODY: &[u8] = br#"{"test": 2432232314}"#;
const KA_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

#[test]
fn standard_webhooks_known_answer() {
    assert_eq!(
        sign_standard(KA_SECRET, KA_ID, KA_TS, KA_BODY).unwrap(),
        KA_SIG
    );
    let key = SigningKey::new(KA_SECRET).unwrap();
    assert_eq!(key.standard_signature(KA_ID, KA_TS, KA_BODY), KA_SIG);
    verify_standard_at(
        KA_SECRET,
        KA_ID,
        "1614265330",
        KA_SIG,
        KA_BODY,
        DEFAULT_TOLERANCE,
        1_614_265_330,
    )
    .unwrap();
}

#[test]
fn signing_key_matches_the_free_functions() {
    let key = SigningKey::new("plain secret").unwrap();
    assert_eq!(
        key.flock_signature(b"body"),
        flock_signature_header(b"body", b"plain secret")
    );
    assert_eq!(
        key.standard_signature("id", 7, b"body"),
        sign_standard("plain secret", "id", 7, b"body").unwrap()
    );
    // A secret without the prefix is used as its UTF-8 bytes.
    assert_eq!(standard_key("plain secret").unwrap(), b"plain secret");
    assert!(!format!("{key:?}").contains("plain"));
}

#[test]
fn several_signatures_any_match_is_enough() {
    let header = format!("v1,bm9wZQ== v2,whatever {KA_SIG}");
    verify_standard_at(
        KA_SECRET,
        KA_ID,
        "1614265330",
        &header,
        KA_BODY,
        DEFAULT_TOLERANCE,
        1_614_265_330,
    )
    .unwrap();
}

#[test]
fn standard_rejections() {
    let at = |now: u64, ts: &str, sig: &str, body: &[u8], secret: &str| {
        verify_standard_at(secret, KA_ID, ts, sig, body, DEFAULT_TOLERANCE, now)
    };
    let now = 1_614_265_330;
    assert_eq!(
        at(
            now,
            "1614265330",
            KA_SIG,
            br#"{"test": 2432232315}"#,
            KA_SECRET
        ),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        at(now, "1614265330", KA_SIG, KA_BODY, "whsec_bm90IHRoZSBrZXk="),
        Err(VerifyError::Mismatch)
    );
    // The id is part of the signed message.
    assert_eq!(
        verify_standard_at(
            KA_SECRET,
            "msg_other",
            "1614265330",
            KA_SIG,
            KA_BODY,
            DEFAULT_TOLERANCE,
            now
        ),
        Err(VerifyError::Mismatch)
    );
    // Stale and future timestamps, just past the 5 minute tolerance; just inside passes the
    // timestamp check and then fails on the signature, which covers the timestamp too.
    assert_eq!(
        at(now + 301, "1614265330", KA_SIG, KA_BODY, KA_SECRET),
        Err(VerifyError::TimestampTooOld(301))
    );
    assert_eq!(
        at(now - 301, "1614265330", KA_SIG, KA_BODY, KA_SECRET),
        Err(VerifyError::TimestampInFuture(301))
    );
    at(now + 300, "1614265330", KA_SIG, KA_BODY, KA_SECRET).unwrap();
    at(now - 300, "1614265330", KA_SIG, KA_BODY, KA_SECRET).unwrap();
    assert_eq!(
        at(now, "1614265331", KA_SIG, KA_BODY, KA_SECRET),
        Err(VerifyError::Mismatch)
    );
    // Malformed headers.
    assert_eq!(
        at(now, "soon", KA_SIG, KA_BODY, KA_SECRET),
        Err(VerifyError::MalformedTimestamp)
    );
    assert_eq!(
        at(now, "", KA_SIG, KA_BODY, KA_SECRET),
        Err(VerifyError::MalformedTimestamp)
    );
    for sig in ["", "   ", "v2,abc", "nocomma"] {
        let err = at(now, "1614265330", sig, KA_BODY, KA_SECRET).unwrap_err();
        assert!(
            matches!(err, VerifyError::MalformedHeader(_)),
            "{sig:?}: {err:?}"
        );
    }
    assert_eq!(
        at(now, "1614265330", "v1,not-base64!!", KA_BODY, KA_SECRET),
        Err(VerifyError::Mismatch)
    );
}

#[test]
fn invalid_whsec_secrets_are_errors() {
    assert_eq!(standard_key("whsec_"), Err(KeyError::EmptyKey));
    assert_eq!(standard_key("whsec_!!!"), Err(KeyError::InvalidBase64));
    assert_eq!(
        SigningKey::new("whsec_***").unwrap_err(),
        KeyError::InvalidBase64
    );
    let err = verify_standard("whsec_!!", KA_ID, "0", KA_SIG, KA_BODY, Duration::MAX).unwrap_err();
    assert_eq!(err, VerifyError::Key(KeyError::InvalidBase64));
}

/// `X-Flock-Signature` of `KA_BODY` under `KA_SECRET` (its UTF-8 bytes as the key), computed
/// with another HMAC implementation.
const KA_FLOCK: &str = "sha256=80ec8a89ce3cd22133a1066caecb4d04fea7467657c8514d717ec42c38a5c94c";

/// The headers of the known-answer delivery, by lower-case name as HTTP libraries give them.
fn ka_headers() -> HashMap<String, String> {
    [
        ("x-flock-signature", KA_FLOCK),
        ("webhook-id", KA_ID),
        ("webhook-timestamp", "1614265330"),
        ("webhook-signature", KA_SIG),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// `verify_webhook_at` over a map of headers, at the known answer's time.
fn check(
    headers: &HashMap<String, String>,
    body: &[u8],
    secrets: &[&str],
) -> Result<(), WebhookError> {
    verify_webhook_at(
        |name| headers.get(name).map(String::as_str),
        body,
        secrets,
        DEFAULT_TOLERANCE,
        1_614_265_330,
    )
}

fn invalid(header: &'static str, error: VerifyError) -> Result<(), WebhookError> {
    Err(WebhookError::Invalid { header, error })
}

#[test]
fn verify_webhook_known_answer() {
    assert_eq!(
        flock_signature_header(KA_BODY, KA_SECRET.as_bytes()),
        KA_FLOCK
    );
    check(&ka_headers(), KA_BODY, &[KA_SECRET]).unwrap();
    // Upper-case hex is the same signature.
    let mut headers = ka_headers();
    headers.insert(
        "x-flock-signature".into(),
        KA_FLOCK.to_uppercase().replace("SHA256=", "sha256="),
    );
    check(&headers, KA_BODY, &[KA_SECRET]).unwrap();
}

#[test]
fn verify_webhook_asks_in_lower_case_and_a_case_insensitive_lookup_answers() {
    // A receiver whose map keeps the names as the sender spelt them looks them up ignoring case.
    let sent: Vec<(&str, &str)> = vec![
        ("X-Flock-Signature", KA_FLOCK),
        ("Webhook-Id", KA_ID),
        ("WEBHOOK-TIMESTAMP", "1614265330"),
        ("webhook-signature", KA_SIG),
    ];
    let asked = std::cell::RefCell::new(Vec::new());
    verify_webhook_at(
        |name| {
            asked.borrow_mut().push(name.to_owned());
            sent.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        },
        KA_BODY,
        &[KA_SECRET],
        DEFAULT_TOLERANCE,
        1_614_265_330,
    )
    .unwrap();
    assert_eq!(
        asked.into_inner(),
        [
            "x-flock-signature",
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature"
        ]
    );
}

#[test]
fn verify_webhook_with_the_system_clock() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let body = br#"{"event_type":"artifact.created"}"#;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let key = SigningKey::new(secret).unwrap();
    let flock = key.flock_signature(body);
    let standard = key.standard_signature("msg_1", i64::try_from(now).unwrap(), body);
    let timestamp = now.to_string();
    let header = |name: &str| match name {
        "x-flock-signature" => Some(flock.as_str()),
        "webhook-id" => Some("msg_1"),
        "webhook-timestamp" => Some(timestamp.as_str()),
        "webhook-signature" => Some(standard.as_str()),
        _ => None,
    };
    verify_webhook(header, body, &[secret]).unwrap();
    // Secrets may be given as owned strings too.
    verify_webhook(header, body, &[String::from(secret)]).unwrap();
    assert_eq!(
        verify_webhook(header, b"tampered", &[secret]),
        invalid("X-Flock-Signature", VerifyError::Mismatch)
    );
    // The known-answer delivery is years old by the system clock.
    let old = ka_headers();
    assert!(matches!(
        verify_webhook(|n| old.get(n).map(String::as_str), KA_BODY, &[KA_SECRET]),
        Err(WebhookError::Invalid {
            header: "webhook-timestamp",
            error: VerifyError::TimestampTooOld(_)
        })
    ));
}

#[test]
fn verify_webhook_accepts_any_secret_of_the_list() {
    const OLD: &str = "the old secret";
    // The receiver rotates: it accepts the new and the old secret, in either order.
    check(&ka_headers(), KA_BODY, &["another", KA_SECRET]).unwrap();
    check(&ka_headers(), KA_BODY, &[KA_SECRET, "another"]).unwrap();
    // The sender rotates: `webhook-signature` carries a signature per secret, while
    // `X-Flock-Signature` carries one; a receiver that knows either secret accepts it.
    let old_key = SigningKey::new(OLD).unwrap();
    let old_sig = old_key.standard_signature(KA_ID, KA_TS, KA_BODY);
    let mut headers = ka_headers();
    headers.insert("webhook-signature".into(), format!("{old_sig} {KA_SIG}"));
    check(&headers, KA_BODY, &[KA_SECRET]).unwrap();
    headers.insert("x-flock-signature".into(), old_key.flock_signature(KA_BODY));
    check(&headers, KA_BODY, &[OLD]).unwrap();
    check(&headers, KA_BODY, &[KA_SECRET, OLD]).unwrap();
    // Each signature must come from a secret of the list.
    assert_eq!(
        check(&headers, KA_BODY, &[KA_SECRET]),
        invalid("X-Flock-Signature", VerifyError::Mismatch)
    );
    assert_eq!(
        check(&ka_headers(), KA_BODY, &[OLD]),
        invalid("X-Flock-Signature", VerifyError::Mismatch)
    );
    headers.insert("webhook-signature".into(), KA_SIG.to_owned());
    assert_eq!(
        check(&headers, KA_BODY, &[OLD]),
        invalid("webhook-signature", VerifyError::Mismatch)
    );
}

#[test]
fn verify_webhook_refuses_tampering_and_names_the_header() {
    let ka = ka_headers();
    // Another body: the first signature checked fails.
    assert_eq!(
        check(&ka, br#"{"test": 2432232315}"#, &[KA_SECRET]),
        invalid("X-Flock-Signature", VerifyError::Mismatch)
    );
    // The id and the timestamp are signed by `webhook-signature` only.
    let tampered = |name: &str, value: &str| {
        let mut headers = ka_headers();
        headers.insert(name.to_owned(), value.to_owned());
        check(&headers, KA_BODY, &[KA_SECRET])
    };
    assert_eq!(
        tampered("webhook-id", "msg_other"),
        invalid("webhook-signature", VerifyError::Mismatch)
    );
    assert_eq!(
        tampered("webhook-timestamp", "1614265331"),
        invalid("webhook-signature", VerifyError::Mismatch)
    );
    // A signature of another message moved over.
    let other = SigningKey::new(KA_SECRET).unwrap();
    assert_eq!(
        tampered("x-flock-signature", &other.flock_signature(b"{}")),
        invalid("X-Flock-Signature", VerifyError::Mismatch)
    );
    assert_eq!(
        tampered(
            "webhook-signature",
            &other.standard_signature(KA_ID, KA_TS, b"{}")
        ),
        invalid("webhook-signature", VerifyError::Mismatch)
    );
    // Out of tolerance, either way, before the signature is looked at.
    assert_eq!(
        tampered("webhook-timestamp", "1614265029"),
        invalid("webhook-timestamp", VerifyError::TimestampTooOld(301))
    );
    assert_eq!(
        tampered("webhook-timestamp", "1614265631"),
        invalid("webhook-timestamp", VerifyError::TimestampInFuture(301))
    );
    // Malformed values.
    assert_eq!(
        tampered("webhook-timestamp", "soon"),
        invalid("webhook-timestamp", VerifyError::MalformedTimestamp)
    );
    for (name, value) in [
        ("x-flock-signature", ""),
        ("x-flock-signature", "sha1=abcd"),
        ("webhook-signature", ""),
        ("webhook-signature", "v2,abc"),
        ("webhook-signature", "nocomma"),
    ] {
        let err = tampered(name, value).unwrap_err();
        assert!(
            matches!(
                err,
                WebhookError::Invalid {
                    error: VerifyError::MalformedHeader(_),
                    ..
                }
            ),
            "{name}: {value:?}: {err:?}"
        );
        assert_eq!(
            err.header().map(str::to_ascii_lowercase).as_deref(),
            Some(name)
        );
    }
}

#[test]
fn verify_webhook_requires_every_header() {
    for (name, shown) in [
        ("x-flock-signature", "X-Flock-Signature"),
        ("webhook-id", "webhook-id"),
        ("webhook-timestamp", "webhook-timestamp"),
        ("webhook-signature", "webhook-signature"),
    ] {
        let mut headers = ka_headers();
        headers.remove(name);
        let err = check(&headers, KA_BODY, &[KA_SECRET]).unwrap_err();
        assert_eq!(err, WebhookError::Missing { header: shown }, "{name}");
        assert_eq!(err.header(), Some(shown));
        assert_eq!(err.to_string(), format!("the {shown} header is missing"));
    }
}

#[test]
fn verify_webhook_refuses_an_empty_or_unusable_list_of_secrets() {
    let no_secrets: [&str; 0] = [];
    assert_eq!(
        check(&ka_headers(), KA_BODY, &no_secrets),
        Err(WebhookError::NoSecret)
    );
    let err = check(&ka_headers(), KA_BODY, &[KA_SECRET, "whsec_!!!"]).unwrap_err();
    assert_eq!(
        err,
        WebhookError::Secret {
            index: 1,
            error: KeyError::InvalidBase64
        }
    );
    assert_eq!(err.header(), None);
    assert!(!err.to_string().contains("!!!"), "{err}");
}

#[test]
fn verify_webhook_errors_name_the_header_and_never_a_secret() {
    let err = check(&ka_headers(), b"other", &["hunter2"]).unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(shown.starts_with("X-Flock-Signature: "), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

/// A second `whsec_` secret: the one a sender rotated to (or from).
const SECOND: &str = "whsec_dGhlIHNlY29uZCBzZWNyZXQsIDMyIGJ5dGVzIGxvbmc=";

#[test]
fn standard_signatures_sign_with_each_key_in_order() {
    let ka = SigningKey::new(KA_SECRET).unwrap();
    let second = SigningKey::new(SECOND).unwrap();
    let second_sig = second.standard_signature(KA_ID, KA_TS, KA_BODY);
    assert_eq!(
        standard_signatures(&[&ka], KA_ID, KA_TS, KA_BODY),
        KA_SIG,
        "one key: the one signature"
    );
    assert_eq!(
        standard_signatures(&[&ka, &second], KA_ID, KA_TS, KA_BODY),
        format!("{KA_SIG} {second_sig}")
    );
    assert_eq!(
        standard_signatures(&[&second, &ka], KA_ID, KA_TS, KA_BODY),
        format!("{second_sig} {KA_SIG}")
    );
    assert_eq!(standard_signatures(&[], KA_ID, KA_TS, KA_BODY), "");
}

#[test]
fn a_header_signed_by_two_secrets_verifies_under_either() {
    let keys = [
        SigningKey::new(KA_SECRET).unwrap(),
        SigningKey::new(SECOND).unwrap(),
    ];
    let header = standard_signatures(&[&keys[0], &keys[1]], KA_ID, KA_TS, KA_BODY);
    let at = |secret: &str, body: &[u8]| {
        verify_standard_at(
            secret,
            KA_ID,
            "1614265330",
            &header,
            body,
            DEFAULT_TOLERANCE,
            1_614_265_330,
        )
    };
    at(KA_SECRET, KA_BODY).unwrap();
    at(SECOND, KA_BODY).unwrap();
    assert_eq!(at("a third secret", KA_BODY), Err(VerifyError::Mismatch));
    assert_eq!(at(KA_SECRET, b"tampered"), Err(VerifyError::Mismatch));

    // `verify_webhook`: `X-Flock-Signature` carries the current secret's one signature and
    // `webhook-signature` both; a receiver that holds the current secret, alone or with the old
    // one, accepts the delivery.
    let mut headers = ka_headers();
    headers.insert("webhook-signature".into(), header.clone());
    check(&headers, KA_BODY, &[KA_SECRET]).unwrap();
    check(&headers, KA_BODY, &[SECOND, KA_SECRET]).unwrap();
    // One that holds only the old secret finds `webhook-signature` fine but not
    // `X-Flock-Signature`, which is one signature by the current secret.
    assert_eq!(
        check(&headers, KA_BODY, &[SECOND]),
        invalid("X-Flock-Signature", VerifyError::Mismatch)
    );
    headers.insert("x-flock-signature".into(), keys[1].flock_signature(KA_BODY));
    check(&headers, KA_BODY, &[SECOND]).unwrap();
    assert_eq!(
        check(&headers, b"tampered", &[SECOND, KA_SECRET]),
        invalid("X-Flock-Signature", VerifyError::Mismatch)
    );
}

/// The `standardwebhooks` crate (the Standard Webhooks project's Rust library) verifies a
/// header that carries a signature per secret under either secret, and refuses a third.
#[test]
fn the_standardwebhooks_crate_verifies_two_signatures_under_either_secret() {
    use standardwebhooks::{
        HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP, Webhook,
    };

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let now = i64::try_from(now).unwrap();
    let body = br#"{"event_type":"artifact.created","sequence":1}"#;
    let current = SigningKey::new(SECOND).unwrap();
    let previous = SigningKey::new(KA_SECRET).unwrap();
    let header = standard_signatures(&[&current, &previous], "msg_rotating", now, body);
    let mut headers = http::HeaderMap::new();
    headers.insert(HEADER_WEBHOOK_ID, "msg_rotating".parse().unwrap());
    headers.insert(HEADER_WEBHOOK_TIMESTAMP, now.to_string().parse().unwrap());
    headers.insert(HEADER_WEBHOOK_SIGNATURE, header.parse().unwrap());
    for secret in [SECOND, KA_SECRET] {
        let webhook = Webhook::new(secret).unwrap();
        webhook.verify(body, &headers).unwrap();
        // Each signature is the one the library computes itself.
        let own = webhook.sign("msg_rotating", now, body).unwrap();
        assert!(header.split(' ').any(|s| s == own), "{own} in {header}");
        assert!(webhook.verify(b"tampered", &headers).is_err());
    }
    let third = Webhook::new("whsec_dGhpcmQ=").unwrap();
    assert!(third.verify(body, &headers).is_err());
    // And what the library signs, one signature, this crate verifies.
    let theirs = Webhook::new(SECOND)
        .unwrap()
        .sign("msg_rotating", now, body)
        .unwrap();
    verify_standard(
        SECOND,
        "msg_rotating",
        &now.to_string(),
        &format!(
            "{theirs} {}",
            previous.standard_signature("msg_rotating", now, body)
        ),
        body,
        DEFAULT_TOLERANCE,
    )
    .unwrap();
}
