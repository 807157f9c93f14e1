//! One integration-test binary (one link step); each module is a story.
mod support;

mod bounds;
mod crash;
mod distrust;
mod faults;
mod findings;
mod fleet;
mod fuzz_regressions;
mod gateway;
mod hostile;
mod readme;
mod run;
mod source;
mod sync;
mod tls;
mod validate;
mod webhook;
