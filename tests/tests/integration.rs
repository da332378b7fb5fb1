//! Every integration test of this crate, in one binary (see Cargo.toml).

mod assignment_contract;
mod kms_keys;
mod policy_properties;
mod stress;
mod table_definition;
mod template_regions;
mod template_security;
mod two_regions;
