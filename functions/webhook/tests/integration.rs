//! Every integration test of this crate, in one binary (see Cargo.toml).

mod bad_input;
mod call_ends;
mod channels;
mod common;
mod faults;
mod fixtures;
mod hardening;
mod lambda_watch;
mod logs;
mod more_providers;
mod outbox;
mod pins;
mod routing;
mod signatures;
