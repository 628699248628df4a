//! The synguard controller: loads and attaches the XDP programs, reads their counters.
//! The binary (`main.rs`) is the CLI on top of this library; tests and benchmarks use it too.

pub mod attach;
pub mod auto_mode;
pub mod clock;
pub mod control;
pub mod export;
pub mod flow_control;
pub mod flow_events;
pub mod flow_filter;
pub mod flows;
pub mod guard_config;
pub mod inject;
pub mod metrics;
pub mod object;
pub mod persist;
pub mod policy;
pub mod policy_control;
pub mod privilege;
pub mod prog_test_run;
pub mod stats;
pub mod tcp_state;
