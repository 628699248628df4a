//! The synguard controller: loads and attaches the XDP programs, reads their counters.
//! The binary (`main.rs`) is the CLI on top of this library; tests and benchmarks use it too.

pub mod attach;
pub mod flow_events;
pub mod guard_config;
pub mod object;
pub mod privilege;
pub mod prog_test_run;
pub mod stats;
