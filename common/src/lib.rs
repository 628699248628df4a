//! Code shared by the XDP program and the userspace controller.
//!
//! Everything here is `no_std` and allocation-free so that the very same functions run inside
//! the kernel (compiled for `bpfel-unknown-none`) and in host unit tests.
#![no_std]

pub mod accounting;
pub mod checksum;
pub mod cookie;
pub mod counters;
pub mod field;
pub mod flow_filter;
pub mod frame;
pub mod icmp;
pub mod maps;
pub mod parse;
pub mod segment;
pub mod seq;
pub mod siphash;
pub mod sketch;
pub mod tcp_options;
#[cfg(feature = "test-frames")]
pub mod test_frames;
pub mod token_bucket;
pub mod translate;
pub mod verdict;
