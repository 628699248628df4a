//! Validated flows: the TCP state machine of each endpoint (RFC 9293, RFC 5961), the table of
//! flows with its timers, the data plane's flow events, the segments the controller itself
//! sends, and the flow filter in front of the flows map.
//!
//! Owns the flows map and the flow filter. It may not touch the policy's maps or the
//! configuration maps.

pub mod control;
pub mod events;
pub mod filter;
pub mod inject;
pub mod table;
pub mod tcp_state;
