//! What the operator configures, checked before anything touches the kernel: `synguard run`'s
//! flags, the TOML file that mirrors them, protected services, list files.
//!
//! Owns parsing and validation only. It may not touch the kernel, the maps or the network:
//! `dataplane` writes what this module has checked.

pub mod file;
pub mod lists;
pub mod policy_args;
pub mod run_args;
pub mod service;
pub mod setting;
pub mod value_parsers;
