//! Integration tests of `flock-models`: the webhook body bytes, request validation, secrets.

mod artifact;
mod requests;
mod secrets;
mod webhook_body;
