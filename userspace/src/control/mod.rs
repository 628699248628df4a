//! The command line and a guard: the typed control protocol (`protocol`), the socket where a
//! controller listens (`socket`), both of its ends (`client`, `server`), and the answers read
//! from a guard's pins when no controller runs (`pinned`).
//!
//! Owns the wire between the two processes. It may not touch the data plane itself: the
//! server hands each request to the daemon's live parts.

pub mod client;
pub mod pinned;
pub mod protocol;
pub mod server;
pub mod socket;
