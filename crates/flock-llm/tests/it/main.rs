//! Integration tests of `flock-llm`. Those that need a model run against the OpenAI-compatible
//! server `FLOCK_TEST_LLM_URL` names (`scripts/llm-server.sh start` prints one) and say they
//! were skipped without it; the others use small HTTP servers of their own on 127.0.0.1.

mod determinism;
mod failures;
mod metrics;
mod rate_limit;
mod structured;
mod support;
mod truncation;
