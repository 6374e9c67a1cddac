//! A workflow's webhooks from request to removal: [`Webhooks`] checks a requested webhook
//! (the SSRF guard, the default secret), registers it under a fresh correlation id, numbers and
//! builds the delivery of each of the workflow's artifacts and forgets the workflow when it goes
//! idle; [`SsrfGuard`] is the address policy webhooks must pass.
#![doc = include_str!("../README.md")]

mod ssrf;
mod webhooks;

pub use ssrf::{Refused, RefusedRange, SsrfGuard};
pub use webhooks::{AddressRefused, StartError, Webhooks};
