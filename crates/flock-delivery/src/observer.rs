//! Attempt observers: what else hears of an attempt once its result is recorded, beside the
//! attempt log and the metrics (the API's live event stream).

use flock_models::NewDelivery;

use crate::outbox::{AttemptView, Resolution};

/// One recorded attempt as an [`AttemptObserver`] hears of it: the delivery it was made for
/// (its tenant, workflow, artifact and sequence; the body and secret are there too, and an
/// observer must not pass either on), the attempt's record and what followed from it.
#[derive(Debug, Clone, Copy)]
pub struct AttemptReport<'a> {
    /// The delivery, as the outbox handed it to the dispatcher.
    pub delivery: &'a NewDelivery,
    /// The attempt as it was recorded.
    pub attempt: &'a AttemptView,
    /// Delivered, retried at a time, or failed.
    pub resolution: Resolution,
}

/// Hears of every attempt whose result the outbox accepted, at the same place the metrics count
/// it (an attempt whose lease had lapsed is reported to no one, as it is counted nowhere).
/// Called on the attempt's task: it must be quick and must not block.
pub trait AttemptObserver: Send + Sync + 'static {
    /// An attempt was recorded.
    fn attempted(&self, report: &AttemptReport<'_>);
}
