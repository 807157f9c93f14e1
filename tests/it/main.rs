//! One integration-test binary (one link step); each module is a story.
mod support;

mod crash;
mod examples;
mod export;
mod faults;
mod first_day;
mod fleet;
mod fuzz_regressions;
mod gateway;
mod hostile;
mod plan;
mod readme;
mod run;
mod signatures;
mod source;
mod sync;
mod tls;
mod validate;
mod vars;
mod verify;
mod webhook;
