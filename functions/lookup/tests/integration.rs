//! Every integration test of this crate, in one binary (see Cargo.toml).

mod common;
mod contacts;
mod fallback;
mod openapi;
mod sessions;
mod watch;
