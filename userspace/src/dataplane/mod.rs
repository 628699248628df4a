//! The data plane as the controller sees it: the compiled eBPF object, attaching it, the pins
//! that outlive the controller, the privileges XDP needs, the configuration maps it writes,
//! the cookie keys, the per-CPU counters.
//!
//! Owns every map write except the flows map (owned by `flows`) and the policy's lists
//! (owned by `policy`). It may not decide anything: callers say what to write.

pub mod attach;
pub mod counters;
pub mod keys;
pub mod map_source;
pub mod maps;
pub mod object;
pub mod persist;
pub mod privilege;
#[cfg(feature = "prog-test-run")]
pub mod test_run;
