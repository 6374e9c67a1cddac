//! Integration tests of `flock-retry`: schedule, classification, decisions and `Retry-After`,
//! table-driven.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flock_retry::{
    Class, Decision, GiveUp, Outcome, PolicyError, RetryPolicy, parse_http_date, parse_retry_after,
};

const S: fn(u64) -> Duration = Duration::from_secs;
const MS: fn(u64) -> Duration = Duration::from_millis;

#[test]
fn default_schedule_is_one_two_four_seconds() {
    let policy = RetryPolicy::default();
    assert_eq!(policy.delays().collect::<Vec<_>>(), [S(1), S(2), S(4)]);
    assert_eq!(policy.max_attempts(), 4);
    assert_eq!(policy.jitter, 0.0);
    policy.validate().unwrap();
}

#[test]
fn custom_schedules() {
    let cases = [
        (
            RetryPolicy {
                max_retries: 4,
                base_delay: MS(10),
                factor: 3,
                ..Default::default()
            },
            vec![MS(10), MS(30), MS(90), MS(270)],
        ),
        (
            RetryPolicy {
                max_retries: 3,
                base_delay: MS(500),
                factor: 1,
                ..Default::default()
            },
            vec![MS(500); 3],
        ),
        (
            RetryPolicy {
                max_retries: 5,
                base_delay: S(1),
                factor: 2,
                max_delay: S(5),
                jitter: 0.0,
            },
            vec![S(1), S(2), S(4), S(5), S(5)],
        ),
        (
            RetryPolicy {
                max_retries: 0,
                ..Default::default()
            },
            vec![],
        ),
    ];
    for (policy, expected) in cases {
        assert_eq!(policy.delays().collect::<Vec<_>>(), expected, "{policy:?}");
    }
}

#[test]
fn backoff_never_overflows() {
    let policy = RetryPolicy {
        max_retries: u32::MAX,
        base_delay: Duration::MAX,
        factor: u32::MAX,
        max_delay: Duration::MAX,
        jitter: 1.0,
    };
    for retry in [0, 1, 63, 64, 1000, u32::MAX] {
        assert_eq!(policy.backoff(retry), Duration::MAX);
    }
    let capped = RetryPolicy::default();
    for retry in [30, 64, 65, 200, u32::MAX] {
        assert_eq!(capped.backoff(retry), capped.max_delay, "retry {retry}");
    }
    assert_eq!(capped.max_attempts(), 4);
    assert_eq!(
        RetryPolicy {
            max_retries: u32::MAX,
            ..capped
        }
        .max_attempts(),
        u32::MAX
    );
    // Decisions at huge attempt numbers neither panic nor exceed the cap.
    let wait = policy.decide(u32::MAX - 1, &Outcome::Timeout, 0.99);
    assert_eq!(wait, Decision::RetryAfter(Duration::MAX));
}

#[test]
fn jitter_stays_within_its_bounds() {
    let policy = RetryPolicy {
        jitter: 0.25,
        ..Default::default()
    };
    let base = S(4);
    for i in 0..1000 {
        let sample = f64::from(i) / 1000.0;
        let d = policy.jittered(base, sample);
        assert!(d >= S(3) && d <= S(5), "sample {sample}: {d:?}");
    }
    assert_eq!(policy.jittered(base, 0.0), S(3));
    // Samples outside [0, 1) fall back to the middle instead of escaping the bounds.
    for bad in [-1.0, 1.0, 7.5, f64::NAN, f64::INFINITY] {
        assert_eq!(policy.jittered(base, bad), base, "{bad}");
    }
    // Jitter never lifts a wait over max_delay.
    let capped = RetryPolicy {
        jitter: 1.0,
        max_delay: S(5),
        ..Default::default()
    };
    assert_eq!(capped.jittered(S(4), 0.999), S(5));
    // No jitter: the same wait whatever the sample.
    assert_eq!(RetryPolicy::default().jittered(base, 0.9), base);
}

#[test]
fn invalid_policies_are_named() {
    let cases = [
        (
            RetryPolicy {
                factor: 0,
                ..Default::default()
            },
            PolicyError::ZeroFactor,
        ),
        (
            RetryPolicy {
                jitter: 1.5,
                ..Default::default()
            },
            PolicyError::JitterOutOfRange(1.5),
        ),
        (
            RetryPolicy {
                jitter: -0.1,
                ..Default::default()
            },
            PolicyError::JitterOutOfRange(-0.1),
        ),
        (
            RetryPolicy {
                base_delay: S(10),
                max_delay: S(1),
                ..Default::default()
            },
            PolicyError::BaseAboveMax,
        ),
    ];
    for (policy, expected) in cases {
        assert_eq!(policy.validate(), Err(expected.clone()));
        assert!(!expected.to_string().is_empty());
    }
}

#[test]
fn classification_table() {
    let status = |code| Outcome::Status {
        code,
        retry_after: None,
    };
    let retry = Class::Retryable { not_before: None };
    let cases = [
        (status(200), Class::Delivered),
        (status(201), Class::Delivered),
        (status(204), Class::Delivered),
        (status(299), Class::Delivered),
        (status(100), retry),
        (status(301), retry),
        (status(302), retry),
        (status(304), retry),
        (status(400), retry),
        (status(401), retry),
        (status(404), retry),
        (status(409), retry),
        (status(410), Class::Permanent(GiveUp::Gone)),
        (status(429), retry),
        (status(500), retry),
        (status(502), retry),
        (status(503), retry),
        (Outcome::ConnectError, retry),
        (Outcome::Timeout, retry),
        (Outcome::OtherError, retry),
        (Outcome::Blocked, Class::Permanent(GiveUp::Blocked)),
        (
            Outcome::Status {
                code: 429,
                retry_after: Some(S(7)),
            },
            Class::Retryable {
                not_before: Some(S(7)),
            },
        ),
        (
            Outcome::Status {
                code: 503,
                retry_after: Some(S(7)),
            },
            Class::Retryable {
                not_before: Some(S(7)),
            },
        ),
        // Retry-After counts only on 429 and 503.
        (
            Outcome::Status {
                code: 500,
                retry_after: Some(S(7)),
            },
            retry,
        ),
        (
            Outcome::Status {
                code: 200,
                retry_after: Some(S(7)),
            },
            Class::Delivered,
        ),
    ];
    for (outcome, expected) in cases {
        assert_eq!(outcome.classify(), expected, "{outcome:?}");
    }
}

#[test]
fn outcomes_say_their_status_and_whether_they_delivered() {
    let status = |code| Outcome::Status {
        code,
        retry_after: None,
    };
    let cases = [
        (status(200), Some(200), true),
        (status(299), Some(299), true),
        (status(199), Some(199), false),
        (status(300), Some(300), false),
        (status(410), Some(410), false),
        (
            Outcome::Status {
                code: 503,
                retry_after: Some(S(7)),
            },
            Some(503),
            false,
        ),
        (Outcome::ConnectError, None, false),
        (Outcome::Timeout, None, false),
        (Outcome::Blocked, None, false),
        (Outcome::OtherError, None, false),
    ];
    for (outcome, code, success) in cases {
        assert_eq!(outcome.status_code(), code, "{outcome:?}");
        assert_eq!(outcome.is_success(), success, "{outcome:?}");
        // Success is exactly what classifies as delivered.
        assert_eq!(
            outcome.classify() == Class::Delivered,
            success,
            "{outcome:?}"
        );
    }
}

#[test]
fn decision_table() {
    let policy = RetryPolicy::default();
    let s500 = Outcome::Status {
        code: 500,
        retry_after: None,
    };
    let cases = [
        (
            1,
            Outcome::Status {
                code: 200,
                retry_after: None,
            },
            Decision::Delivered,
        ),
        (1, s500, Decision::RetryAfter(S(1))),
        (2, s500, Decision::RetryAfter(S(2))),
        (3, Outcome::Timeout, Decision::RetryAfter(S(4))),
        (4, s500, Decision::GiveUp(GiveUp::Exhausted)),
        (
            9,
            Outcome::ConnectError,
            Decision::GiveUp(GiveUp::Exhausted),
        ),
        (
            4,
            Outcome::Status {
                code: 204,
                retry_after: None,
            },
            Decision::Delivered,
        ),
        (
            1,
            Outcome::Status {
                code: 410,
                retry_after: None,
            },
            Decision::GiveUp(GiveUp::Gone),
        ),
        (1, Outcome::Blocked, Decision::GiveUp(GiveUp::Blocked)),
        // Retry-After stretches the wait, never shortens it, and is capped at max_delay.
        (
            1,
            Outcome::Status {
                code: 429,
                retry_after: Some(S(30)),
            },
            Decision::RetryAfter(S(30)),
        ),
        (
            3,
            Outcome::Status {
                code: 503,
                retry_after: Some(S(1)),
            },
            Decision::RetryAfter(S(4)),
        ),
        (
            1,
            Outcome::Status {
                code: 503,
                retry_after: Some(S(86_400)),
            },
            Decision::RetryAfter(S(300)),
        ),
        (
            4,
            Outcome::Status {
                code: 429,
                retry_after: Some(S(1)),
            },
            Decision::GiveUp(GiveUp::Exhausted),
        ),
    ];
    for (attempt, outcome, expected) in cases {
        assert_eq!(
            policy.decide(attempt, &outcome, 0.5),
            expected,
            "attempt {attempt}: {outcome:?}"
        );
    }
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn retry_after_table() {
    // Sun, 06 Nov 1994 08:49:37 GMT is Unix 784111777.
    let now = at(784_111_777 - 120);
    let cases: [(&str, Option<Duration>); 14] = [
        ("0", Some(S(0))),
        ("120", Some(S(120))),
        (" 5 ", Some(S(5))),
        (
            "99999999999999999999999",
            Some(Duration::from_secs(u64::MAX)),
        ),
        ("Sun, 06 Nov 1994 08:49:37 GMT", Some(S(120))),
        ("Sunday, 06-Nov-94 08:49:37 GMT", Some(S(120))),
        ("Sun Nov  6 08:49:37 1994", Some(S(120))),
        ("Sun, 06 Nov 1994 08:40:00 GMT", Some(S(0))),
        ("-5", None),
        ("1.5", None),
        ("", None),
        ("soon", None),
        ("Sun, 06 Nov 1994 08:49:37 PST", None),
        ("Sun, 31 Feb 1994 08:49:37 GMT", None),
    ];
    for (value, expected) in cases {
        assert_eq!(parse_retry_after(value, now), expected, "{value:?}");
    }
}

#[test]
fn http_dates_map_to_unix_time() {
    let cases = [
        ("Thu, 01 Jan 1970 00:00:00 GMT", Some(0)),
        ("Sun, 06 Nov 1994 08:49:37 GMT", Some(784_111_777)),
        ("Tue, 29 Feb 2000 12:00:00 GMT", Some(951_825_600)),
        ("Sat, 28 Nov 2026 12:00:00 GMT", Some(1_795_867_200)),
        ("Thursday, 01-Jan-70 00:00:00 GMT", Some(0)),
        ("Wed, 29 Feb 2023 00:00:00 GMT", None),
        ("Sun, 06 Nov 1994 24:00:00 GMT", None),
        ("Sun, 06 Foo 1994 08:49:37 GMT", None),
        ("Sun, 06 Nov 1994 08:49 GMT", None),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_http_date(text), expected.map(at), "{text:?}");
    }
}

#[test]
fn far_future_retry_after_dates_saturate_to_the_cap() {
    // Dates whose seconds do not fit a u64 (or whose year does not fit the date arithmetic)
    // mean "a very long time": they saturate, with no overflow in this debug build, and the
    // policy caps the wait at max_delay. Dates before 1970 are not dates a server can mean.
    let now = at(1_795_867_200);
    let policy = RetryPolicy::default();
    for value in [
        "Sun, 06 Nov 1000000000000 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1000000000000",
        "Sun, 06 Nov 9223372036854775807 08:49:37 GMT",
    ] {
        let asked = parse_retry_after(value, now).expect(value);
        assert_eq!(
            asked,
            Duration::from_secs(u64::MAX) - S(1_795_867_200),
            "{value}"
        );
        assert_eq!(parse_http_date(value), None, "{value}");
        let outcome = Outcome::Status {
            code: 503,
            retry_after: Some(asked),
        };
        assert_eq!(
            policy.decide(1, &outcome, 0.5),
            Decision::RetryAfter(policy.max_delay),
            "{value}"
        );
    }
    // A year a little past what SystemTime holds on some platforms still parses as a wait.
    assert!(
        parse_retry_after("Sun, 06 Nov 30000 08:49:37 GMT", now).unwrap()
            > S(86_400 * 365 * 27_000)
    );
    for past in [
        "Sun, 06 Nov -9223372036854775808 08:49:37 GMT",
        "Sun, 06 Nov 1969 08:49:37 GMT",
    ] {
        assert_eq!(parse_retry_after(past, now), None, "{past}");
    }
}
