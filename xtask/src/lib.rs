//! Developer and lab tooling for synguard: bootstrap, build, lab, test, demo, bench, flood.
//! The library part is what the lab tests (tests/lab_*.rs) share with the commands.

pub mod bench;
pub mod bench_forward;
pub mod bootstrap;
pub mod build;
pub mod cmd;
pub mod demo;
pub mod flood;
pub mod fuzz;
pub mod guard_profile;
pub mod lab;
pub mod lab_server;
pub mod legit_client;
pub mod package;
pub mod stats;
pub mod test;
