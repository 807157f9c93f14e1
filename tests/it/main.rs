//! One integration-test binary (one link step); each module is a story.
mod support;

mod bounds;
mod crash;
mod distrust;
mod examples;
mod export;
mod exports;
mod faults;
mod findings;
mod first_day;
mod fleet;
mod fuzz_regressions;
mod gateway;
mod hostile;
mod plan;
mod readme;
mod rollout;
mod run;
mod signatures;
mod source;
mod sync;
mod tls;
mod validate;
mod vars;
mod verify;
mod webhook;
