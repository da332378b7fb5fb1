//! Every integration test of this crate, in one binary (see Cargo.toml).

mod common;
mod contract;
mod handler;
mod lambda_watch;
mod logs;
