//! `synguard run`: the controller's life (`run`: settings, load or adopt, attach, serve, exit)
//! and what may change while it runs (`live`: `synguard set`, SIGHUP).
//!
//! Owns the event loop and the order of things. It holds no logic of its own that another
//! module could own: it calls them.

pub mod journal;
pub mod live;
pub mod run;
