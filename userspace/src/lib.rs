//! synguard's controller and command line. The binary (`main.rs`) only calls [`cli::main`];
//! tests and benchmarks use the same library.
//!
//! A newcomer reads, in this order: `daemon` (what `synguard run` does, phase by phase),
//! `dataplane` (the eBPF object and its maps), `flows` (the TCP state of every validated flow),
//! `policy` (who gets blocked and why), `control` (the typed requests between the CLI and a
//! running guard), `export`, `config` and `cli`.

pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod export;
pub mod flows;
#[cfg(feature = "lab")]
pub mod lab;
pub mod policy;
