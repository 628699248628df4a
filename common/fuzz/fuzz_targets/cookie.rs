//! Cookies for any flow, ISN, time, options and keys: a cookie made is accepted with the
//! options it was made with, during its counter and the next; any other ACK number for the
//! same flow is judged without panicking, and one bit off the one made never passes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use synguard_common::{
    cookie::{CookieKeys, CookieOptions, FlowKey, MSS_TABLE, check, make},
    siphash::SipKey,
};

fn take<const N: usize>(data: &mut &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = data.len().min(N);
    out[..n].copy_from_slice(&data[..n]);
    *data = &data[n..];
    out
}

fuzz_target!(|input: &[u8]| {
    let mut data = input;
    let [a, b, c, d] = [
        take::<8>(&mut data),
        take(&mut data),
        take(&mut data),
        take(&mut data),
    ];
    let keys = CookieKeys::new(
        SipKey {
            k0: u64::from_le_bytes(a),
            k1: u64::from_le_bytes(b),
        },
        SipKey {
            k0: u64::from_le_bytes(c),
            k1: u64::from_le_bytes(d),
        },
        0,
    );
    let [client, server] = [take::<4>(&mut data), take(&mut data)];
    let [ports, isn, counter, other] = [
        take::<4>(&mut data),
        take(&mut data),
        take(&mut data),
        take(&mut data),
    ];
    let [shape] = take::<1>(&mut data);
    let flow = FlowKey::v4(
        client,
        u16::from_be_bytes([ports[0], ports[1]]),
        server,
        u16::from_be_bytes([ports[2], ports[3]]),
    );
    let (isn, counter, other) = (
        u32::from_le_bytes(isn),
        u32::from_le_bytes(counter),
        u32::from_le_bytes(other),
    );
    let options = CookieOptions {
        mss: MSS_TABLE[(shape & 7) as usize],
        window_scale: match (shape >> 3) & 15 {
            15 => None,
            shift => Some(shift.min(14)),
        },
        sack_permitted: shape & 0x80 != 0,
        ecn: other & 1 != 0,
    };
    let (key, phase) = keys.current();
    let cookie = make(key, phase, &flow, isn, counter, &options);
    assert_eq!(check(&keys, &flow, isn, cookie, counter), Ok(options));
    assert_eq!(
        check(&keys, &flow, isn, cookie, counter.wrapping_add(1)),
        Ok(options)
    );
    assert!(check(&keys, &flow, isn, cookie, counter.wrapping_add(2)).is_err());
    assert!(check(&keys, &flow, isn, cookie ^ (1 << (other % 20)), counter).is_err());
    let _ = check(&keys, &flow, isn, other, counter);
});
