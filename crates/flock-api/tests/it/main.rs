//! Integration tests of `flock-api`: the production app factory in process, real servers on
//! 127.0.0.1:0 with real webhook receivers, and the `flock-api` binary as a process.

mod bad_input;
mod config;
mod process;
mod routes;
mod server;
mod support;
