//! `cargo xtask flood`: floods against real clients, defense after defense, in the lab.
//!
//! `plan` names what a run is made of, `run` sets up each case and measures it, `probes`
//! reads the counters, `packet_socket` is the packet-socket generator, `report` writes the
//! tables and plots under results/flood/.

pub mod packet_socket;
pub mod plan;
pub mod probes;
pub mod report;
pub mod run;
