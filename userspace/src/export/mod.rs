//! What leaves the box: decisions as JSON lines and ExaBGP API lines, and the Prometheus
//! endpoint. Owns formats and sinks; it may not decide or touch the data plane.

pub mod lines;
pub mod metrics;
