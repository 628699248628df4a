//! What the data-plane test files share: a configured guard and the SYN -> SYN-ACK step.
#![allow(dead_code)] // each test file uses its own part

use etherparse::TcpOptionElement;
use synguard::{guard_config::ProtectedService, privilege, prog_test_run::DataPlane};
use synguard_common::{cookie::CookieKeys, siphash::SipKey, test_frames::*, verdict::Action};

pub const KEY_A: SipKey = SipKey { k0: 11, k1: 12 };
pub const KEY_B: SipKey = SipKey { k0: 21, k1: 22 };

/// `current` live in phase 0, `previous` in phase 1.
pub fn keys(current: SipKey, previous: SipKey) -> CookieKeys {
    CookieKeys::new(current, previous, 0)
}

pub fn guard() -> DataPlane {
    privilege::require_xdp_privileges("the data-plane tests")
        .expect("run the data-plane tests as root, e.g. through `cargo xtask test`");
    let mut guard = DataPlane::load(synguard::object::GUARD_PROGRAM).unwrap();
    let protected: Vec<ProtectedService> = ["198.19.1.0/24:80", "[2001:db8:1::/48]:80"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    guard.configure(&keys(KEY_A, KEY_B), &protected).unwrap();
    guard
}

/// Runs a SYN and checks the SYN-ACK: L2 kept with MACs swapped, the frame trimmed to the
/// packet, and everything `assert_syn_ack` checks. Returns (cookie, our TSval, options).
pub fn syn_ack_for(
    guard: &mut DataPlane,
    syn: &[u8],
    vlans: usize,
) -> (u32, Option<u32>, Vec<TcpOptionElement>) {
    let outcome = guard.run(syn).unwrap();
    assert_eq!(outcome.action().unwrap(), Action::Tx);
    let out = &outcome.output;
    assert_eq!(&out[..6], &MAC_CLIENT);
    assert_eq!(&out[6..12], &MAC_GUARD);
    let l2 = 14 + 4 * vlans;
    assert_eq!(&out[12..l2], &syn[12..l2], "VLAN tags and ethertype kept");
    let (cookie, options) = assert_syn_ack(&out[l2..]);
    let tsval = options.iter().find_map(|o| match o {
        TcpOptionElement::Timestamp(val, _) => Some(*val),
        _ => None,
    });
    (cookie, tsval, options)
}
