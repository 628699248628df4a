//! The controller's one clock module: the data plane's own clock (coarse monotonic), TAI (whose
//! offset from the monotonic clock the data plane adds for its cookie counter), and wall-clock
//! time (block expiries, key epochs, decision records).

/// `clock` (a `libc::CLOCK_*` id) now, in ns.
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    // Linux has had every clock this code reads (monotonic, coarse, TAI) for over a decade.
    assert_eq!(rc, 0, "clock {clock} unreadable");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The data plane's clock (`bpf_ktime_get_coarse_ns`).
pub fn monotonic_coarse_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC_COARSE)
}

/// CLOCK_TAI minus CLOCK_MONOTONIC, in ns: what the data plane adds to its monotonic clock
/// for the cookie counter (`synguard_common::cookie`, Clock).
pub fn tai_offset_ns() -> u64 {
    let monotonic = clock_ns(libc::CLOCK_MONOTONIC);
    clock_ns(libc::CLOCK_TAI).wrapping_sub(monotonic)
}

/// The cookie time counter the data plane reads now (TAI time).
pub fn cookie_counter_now() -> u32 {
    synguard_common::cookie::counter_at(clock_ns(libc::CLOCK_TAI))
}

/// Wall-clock time in seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    clock_ns(libc::CLOCK_REALTIME) as f64 / 1e9
}
