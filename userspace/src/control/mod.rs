//! The control socket between the command line and a running controller: where it lives and
//! who may use it (`socket`), and the controller's side (`server`).
//!
//! Owns the wire between the two processes. It may not touch the data plane itself: the
//! server hands each request to the daemon's live parts.

pub mod server;
pub mod socket;
