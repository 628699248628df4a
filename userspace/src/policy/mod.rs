//! Who gets blocked, for how long, and why (`engine`, pure and host-tested), auto mode's
//! per-service switch, and both applied to the data plane each round (`control`).
//!
//! Owns the blocked and allowed tries, the services map's cookie switch, the per-source
//! counters. It may not touch the flows map.

pub mod auto_mode;
pub mod control;
pub mod engine;
