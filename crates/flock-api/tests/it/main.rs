//! Integration tests of `flock-api`.

mod config;
