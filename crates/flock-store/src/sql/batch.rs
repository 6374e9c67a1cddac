//! A batch of writes taken apart for a backend's batch statement: the publishes that can go in
//! (an id repeated within the batch is refused here), the rows to write, and the claims, one
//! per lease length; and what the statement answered, as outcomes.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flock_delivery::{AttemptView, ClaimedDelivery, ErrorKind, Lease, Resolution};
use flock_models::{NewDelivery, Secret, TenantId, WebhookHeaders, WebhookUrl};
use time::OffsetDateTime;
use tracing::error;
use uuid::Uuid;

use crate::ops::{ClaimRequest, Input, Op, Refusal};
use crate::sql::rows::{self, ArtifactFields, DecodeError, bad, floor_micros, to_u32, to_u64};

/// What one run of a backend's batch statement writes and claims. Its lists may be empty, and
/// its claim may be of nothing: a statement that finds nothing to do costs next to nothing.
pub(crate) struct Batch<'a> {
    /// When the batch runs: its new deliveries are created, and first due, then.
    pub(crate) now: OffsetDateTime,
    pub(crate) artifacts: Vec<&'a ArtifactFields>,
    pub(crate) deliveries: Vec<&'a NewDelivery>,
    /// For each of `deliveries`, whether it is written leased under `fresh`.
    pub(crate) leased: Vec<bool>,
    /// The lease of the new deliveries that this process's dispatcher takes without a claim
    /// ([`Input::Publish`]'s `lease_for`); [`Claim::NONE`] when none is.
    pub(crate) fresh: Claim,
    pub(crate) records: Vec<Record<'a>>,
    pub(crate) claim: Claim,
    /// The destinations whose deliveries the claim passes over, if any (`Outbox::claim_past`).
    pub(crate) past: Option<&'a [String]>,
    /// The earliest due time the claim looks at ([`OffsetDateTime::UNIX_EPOCH`]: all).
    pub(crate) since: OffsetDateTime,
}

/// An attempt to record, and what it does to its delivery; both only while `token` is still
/// the delivery's lease.
pub(crate) struct Record<'a> {
    pub(crate) id: Uuid,
    pub(crate) token: i64,
    pub(crate) attempt: &'a AttemptView,
    pub(crate) state: &'static str,
    pub(crate) due_at: Option<OffsetDateTime>,
    pub(crate) failure: Option<&'static str>,
    pub(crate) completed_at: Option<OffsetDateTime>,
    pub(crate) error_kind: Option<&'static str>,
}

/// Up to `limit` deliveries due at `at` (or whose lease expired by then), earliest due first,
/// leased with `token` until `expires_at`: the claims of a batch with one lease length, at the
/// earliest time one asked at (so none gets a delivery due after it), for all their limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Claim {
    pub(crate) lease_for: Duration,
    pub(crate) at: OffsetDateTime,
    pub(crate) limit: i64,
    pub(crate) token: i64,
    pub(crate) expires_at: OffsetDateTime,
}

impl Claim {
    /// The claim of `request` alone, with a token of its own.
    pub(crate) fn of(request: ClaimRequest) -> Claim {
        Claim {
            lease_for: request.lease_for,
            at: request.now,
            limit: rows::int(request.limit),
            token: rows::new_token(),
            expires_at: expiry(request.now, request.lease_for),
        }
    }

    /// A claim of nothing.
    pub(crate) const NONE: Claim = Claim {
        lease_for: Duration::ZERO,
        at: OffsetDateTime::UNIX_EPOCH,
        limit: 0,
        token: 0,
        expires_at: OffsetDateTime::UNIX_EPOCH,
    };
}

impl<'a> Batch<'a> {
    /// The rows of `ops`: the publishes not refused (those that ask for a lease written
    /// leased under `fresh`, unless it is [`Claim::NONE`]) and the records whose token fits the
    /// column (no other was handed out by this store), with `claim`.
    pub(crate) fn of(ops: &'a [Op], claim: Claim, fresh: Claim) -> Batch<'a> {
        let mut batch = Batch::claiming(claim);
        batch.fresh = fresh;
        for op in ops {
            match &op.input {
                Input::Publish {
                    artifacts,
                    deliveries,
                    lease_for,
                } if op.outcome.is_none() => {
                    batch.artifacts.extend(artifacts);
                    batch.deliveries.extend(deliveries);
                    let leases = lease_for.is_some() && fresh.token != 0;
                    (batch.leased).extend(deliveries.iter().map(|d| leases && leases_at_insert(d)));
                }
                Input::Record {
                    lease,
                    attempt,
                    resolution,
                    ..
                } => {
                    if let Ok(token) = i64::try_from(lease.token) {
                        batch
                            .records
                            .push(Record::new(lease, token, attempt, *resolution));
                    }
                }
                _ => {}
            }
        }
        batch
    }

    /// A batch that only claims.
    pub(crate) fn claiming(claim: Claim) -> Batch<'a> {
        Batch {
            now: floor_micros(OffsetDateTime::now_utc()),
            artifacts: Vec::new(),
            deliveries: Vec::new(),
            leased: Vec::new(),
            fresh: Claim::NONE,
            records: Vec::new(),
            claim,
            past: None,
            since: OffsetDateTime::UNIX_EPOCH,
        }
    }

    /// A batch that only claims, past the destinations `past`, from due time `since`.
    pub(crate) fn claiming_past(
        claim: Claim,
        past: &'a [String],
        since: Option<OffsetDateTime>,
    ) -> Batch<'a> {
        Batch {
            past: Some(past),
            since: floor_micros(since.unwrap_or(OffsetDateTime::UNIX_EPOCH)),
            ..Batch::claiming(claim)
        }
    }
}

impl<'a> Record<'a> {
    /// The only place a write names a failure reason or an error kind.
    fn new(lease: &Lease, token: i64, attempt: &'a AttemptView, resolution: Resolution) -> Self {
        let took = time::Duration::milliseconds(i64::try_from(attempt.duration_ms).unwrap_or(0));
        let finished = attempt.started_at.checked_add(took);
        let finished = finished.unwrap_or(attempt.started_at);
        let (state, due_at, failure, completed_at) = match resolution {
            Resolution::Delivered => ("delivered", None, None, Some(finished)),
            Resolution::RetryAt(at) => ("pending", Some(at), None, None),
            Resolution::Failed(reason) => (
                "failed",
                None,
                Some(flock_delivery::failure_name(reason)),
                Some(finished),
            ),
        };
        Record {
            id: lease.delivery_id,
            token,
            attempt,
            state,
            due_at,
            failure,
            completed_at,
            error_kind: attempt.error_kind.map(ErrorKind::as_str),
        }
    }
}

/// Whether `delivery` may be written leased for the publishing process's dispatcher: one that
/// can go at once. An ordered delivery may have to wait for an earlier one of its webhook,
/// which only the batch's parking can tell, so it is claimed as it always was.
pub(crate) fn leases_at_insert(delivery: &NewDelivery) -> bool {
    !delivery.ordered
}

/// The deliveries of `deliveries` written leased under `fresh` ([`Batch::of`]), as claimed:
/// the first attempt of each, under `fresh`'s token until its expiry.
pub(crate) fn leased(deliveries: &[NewDelivery], fresh: &Claim) -> Vec<ClaimedDelivery> {
    (deliveries.iter())
        .filter(|d| leases_at_insert(d))
        .map(|d| ClaimedDelivery {
            lease: Lease {
                delivery_id: d.id,
                token: fresh.token.unsigned_abs(),
                expires_at: fresh.expires_at,
                ordered: d.ordered,
            },
            delivery: Arc::new(d.clone()),
            attempt: 1,
            round_attempt: 1,
        })
        .collect()
}

/// Refuses each publish that repeats an artifact or delivery id of an earlier one in the
/// batch, or an id of its own. (The database refuses the ids it holds.)
pub(crate) fn refuse_repeated_ids(ops: &mut [Op]) {
    let mut artifacts: HashSet<Uuid> = HashSet::new();
    let mut deliveries: HashSet<Uuid> = HashSet::new();
    for op in ops {
        let Input::Publish {
            artifacts: new_artifacts,
            deliveries: new,
            ..
        } = &op.input
        else {
            continue;
        };
        let (mut own_artifacts, mut own) = (HashSet::new(), HashSet::new());
        let refusal = match (new_artifacts.iter())
            .find(|a| artifacts.contains(&a.id) || !own_artifacts.insert(a.id))
        {
            Some(a) => Some(Refusal::DuplicateArtifact(a.id)),
            None => (new.iter())
                .find(|d| deliveries.contains(&d.id) || !own.insert(d.id))
                .map(|d| Refusal::DuplicateDelivery(d.id)),
        };
        match refusal {
            Some(refusal) => op.outcome = Some(Err(refusal)),
            None => {
                artifacts.extend(own_artifacts);
                deliveries.extend(own);
            }
        }
    }
}

/// The claims of `ops`, one per lease length, in the order they first appear.
pub(crate) fn claims(ops: &[Op]) -> Vec<Claim> {
    let mut claims: Vec<Claim> = Vec::new();
    for request in ops.iter().filter_map(|op| op.input.claim()) {
        match claims.iter_mut().find(|c| c.lease_for == request.lease_for) {
            Some(claim) => {
                claim.at = claim.at.min(request.now);
                claim.limit = claim.limit.saturating_add(rows::int(request.limit));
                claim.expires_at = expiry(claim.at, claim.lease_for);
            }
            None => claims.push(Claim::of(request)),
        }
    }
    claims
}

/// When a lease of `lease_for` taken at `at` expires, to the microsecond a store keeps.
fn expiry(at: OffsetDateTime, lease_for: Duration) -> OffsetDateTime {
    let expires_at = time::Duration::try_from(lease_for)
        .ok()
        .and_then(|lease| at.checked_add(lease))
        .unwrap_or(time::PrimitiveDateTime::MAX.assume_utc());
    floor_micros(expires_at)
}

/// The JSON array of `delivery`'s custom header names, as the `header_names` column keeps
/// them; `None` without custom headers.
pub(crate) fn header_names(delivery: &NewDelivery) -> Result<Option<String>, sqlx::Error> {
    delivery
        .headers
        .as_deref()
        .map(|h| serde_json::to_string(&h.names().collect::<Vec<_>>()))
        .transpose()
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

/// The JSON array of `delivery`'s custom headers as `[name, value]` pairs, as the `headers`
/// column keeps them (like the secret); `None` without custom headers.
pub(crate) fn header_pairs(delivery: &NewDelivery) -> Result<Option<String>, sqlx::Error> {
    delivery
        .headers
        .as_deref()
        .map(|h| serde_json::to_string(h.expose()))
        .transpose()
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

/// What a batch statement answered, as its database's module read it: the deliveries whose
/// record applied, and those its claim leased.
pub(crate) struct Answer {
    pub(crate) applied: Result<HashSet<Uuid>, sqlx::Error>,
    pub(crate) claimed: Result<Vec<Claimed>, sqlx::Error>,
}

/// A delivery a batch statement claimed: its columns, and the due time it had.
pub(crate) struct Claimed {
    pub(crate) id: Uuid,
    pub(crate) correlation_id: Uuid,
    pub(crate) tenant: String,
    pub(crate) artifact_id: Uuid,
    pub(crate) sequence: i64,
    pub(crate) url: String,
    pub(crate) secret: Option<String>,
    pub(crate) body: Option<Vec<u8>>,
    pub(crate) artifact_created_at: OffsetDateTime,
    pub(crate) attempts: i64,
    pub(crate) round_start: i64,
    pub(crate) was_due: OffsetDateTime,
    pub(crate) webhook: i64,
    pub(crate) ordered: i64,
    /// The custom headers as stored: a JSON array of `[name, value]` pairs.
    pub(crate) headers: Option<String>,
}

impl Claimed {
    /// The delivery, leased for `claim`.
    fn lease(self, claim: &Claim) -> Result<ClaimedDelivery, DecodeError> {
        let id = self.id;
        let field = |name: &str, e: &dyn fmt::Display| bad(format!("delivery {id}: {name}: {e}"));
        let body = (self.body).ok_or_else(|| field("body", &"none, while pending"))?;
        let recorded = to_u32(self.attempts, "attempt count")?;
        let round_start = to_u32(self.round_start, "attempt count")?;
        let delivery = NewDelivery {
            id,
            correlation_id: self.correlation_id,
            tenant: TenantId::new(self.tenant).map_err(|e| field("tenant", &e))?,
            artifact_id: self.artifact_id,
            sequence: to_u64(self.sequence, "sequence")?,
            // Stored by whichever build accepted it: an earlier one may have taken a URL that
            // requests may no longer give, and its deliveries are still sent.
            url: WebhookUrl::from_stored(&self.url).map_err(|e| field("url", &e))?,
            // A secret an earlier build stored but that cannot sign (a `whsec_` secret whose
            // key is not base64; the API never accepted one) does not decode: the claim skips
            // the row, as any row that does not decode. Listing never reads the secret.
            secret: (self.secret.map(Secret::new).transpose()).map_err(|e| field("secret", &e))?,
            body: Bytes::from(body),
            artifact_created_at: self.artifact_created_at,
            webhook: u8::try_from(self.webhook).map_err(|e| field("webhook", &e))?,
            ordered: self.ordered != 0,
            // Like the secret: a pair that does not decode (or that no build would have
            // accepted) makes the claim skip the row, and the error never quotes a value.
            headers: match self.headers {
                None => None,
                Some(text) => {
                    let pairs: Vec<(String, String)> = serde_json::from_str(&text)
                        .map_err(|_| field("headers", &"not a JSON array of [name, value]"))?;
                    let headers = WebhookHeaders::from_pairs(pairs)
                        .map_err(|e| field("headers", &e.field_name().unwrap_or("the list")))?;
                    (!headers.is_empty()).then(|| Arc::new(headers))
                }
            },
        };
        Ok(ClaimedDelivery {
            lease: Lease {
                delivery_id: id,
                token: claim.token.unsigned_abs(),
                expires_at: claim.expires_at,
                ordered: delivery.ordered,
            },
            delivery: Arc::new(delivery),
            attempt: recorded.saturating_add(1),
            round_attempt: recorded.saturating_sub(round_start).saturating_add(1),
        })
    }
}

/// What `answer` says: the deliveries whose record applied, and those `claim` leased, earliest
/// due first; `None` (logged) for what cannot be read. A claimed delivery that does not decode
/// is logged and left out. What is not handed out stays claimed until its lease expires.
pub(crate) fn outcomes(
    answer: Answer,
    claim: &Claim,
) -> (Option<HashSet<Uuid>>, Option<Vec<ClaimedDelivery>>) {
    let log = |e: &dyn fmt::Display| {
        error!(error = %e, "a batch's answer cannot be read; its writes are answered with an error or claimed again later");
    };
    let applied = answer.applied.inspect_err(|e| log(e)).ok();
    let claimed = answer.claimed.inspect_err(|e| log(e)).ok().map(|found| {
        let mut claimed: Vec<(OffsetDateTime, ClaimedDelivery)> = (found.into_iter())
            .filter_map(|c| {
                let due = c.was_due;
                c.lease(claim)
                    .inspect_err(|e| log(e))
                    .ok()
                    .map(|c| (due, c))
            })
            .collect();
        claimed.sort_by_key(|(due, c)| (*due, c.delivery.id));
        claimed.into_iter().map(|(_, c)| c).collect()
    });
    (applied, claimed)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn a_stored_secret_that_cannot_sign_does_not_decode_for_a_claim() {
        let claimed = |secret: &str| Claimed {
            id: Uuid::now_v7(),
            correlation_id: Uuid::now_v7(),
            tenant: "default".to_owned(),
            artifact_id: Uuid::now_v7(),
            sequence: 1,
            url: "https://example.com/hook".to_owned(),
            secret: Some(secret.to_owned()),
            body: Some(b"{}".to_vec()),
            artifact_created_at: datetime!(2026-11-28 12:00:00 UTC),
            attempts: 0,
            round_start: 0,
            was_due: datetime!(2026-11-28 12:00:00 UTC),
            webhook: 0,
            ordered: 0,
            headers: None,
        };
        let err = claimed("whsec_!!").lease(&Claim::NONE).unwrap_err();
        assert!(err.0.contains("secret"), "{err}");
        assert!(
            !err.to_string().contains("whsec_!!"),
            "the secret leaked: {err}"
        );
        let leased = claimed("whsec_c2VjcmV0").lease(&Claim::NONE).unwrap();
        let secret = leased.delivery.secret.as_ref().unwrap();
        assert_eq!(secret.expose(), "whsec_c2VjcmV0");
        assert_eq!((leased.attempt, leased.round_attempt), (1, 1));
    }
}
