//! Integration tests of `flock-signing`: known answers, then every way a signature is refused.

use std::time::Duration;

use flock_signing::{
    DEFAULT_TOLERANCE, KeyError, SigningKey, VerifyError, flock_signature_header, sign_payload,
    sign_standard, standard_key, verify_flock_signature, verify_standard, verify_standard_at,
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
