//! Every integration test of this crate, in one binary (see Cargo.toml).

mod common;
mod health;
mod inventory;
mod inventory_plivo;
mod inventory_telnyx;
mod inventory_vonage;
mod lambda_watch;
mod live_peak;
mod refresh;
mod store_pool;
