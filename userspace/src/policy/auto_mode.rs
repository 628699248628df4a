//! Auto mode's switch, per service: SYNs go straight to the server while the service's SYN
//! rate stays at or under its threshold; above it, cookies. Cookies go off again only once the
//! rate has stayed under half the threshold for a hold time, so a flood that pulses does not
//! make the switch flap (and the server's backlog never sees the pulses).

use serde::Serialize;

/// The threshold of services that name none (SYNs per second), unless `--auto-syn-rate`.
pub const DEFAULT_AUTO_SYN_RATE: f64 = 1000.0;

/// Cookies go off under this fraction of the threshold.
pub const OFF_FRACTION: f64 = 0.5;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AutoSwitch {
    /// SYNs per second above which cookies go on.
    pub threshold: f64,
    /// Seconds the rate must stay low before cookies go off.
    pub hold: f64,
    pub cookies_on: bool,
    /// Since when the rate has been low (while cookies are on).
    #[serde(skip)]
    low_since: Option<f64>,
}

/// A change of the switch, to apply and to report.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Switched {
    pub cookies_on: bool,
    pub syn_rate: f64,
    pub threshold: f64,
}

impl AutoSwitch {
    pub fn new(threshold: f64, hold: f64) -> Self {
        Self {
            threshold,
            hold,
            cookies_on: false,
            low_since: None,
        }
    }

    /// Feeds the service's SYN rate measured at `now` (seconds); returns the change, if any.
    pub fn observe(&mut self, now: f64, syn_rate: f64) -> Option<Switched> {
        let switched = Switched {
            cookies_on: !self.cookies_on,
            syn_rate,
            threshold: self.threshold,
        };
        if !self.cookies_on {
            if syn_rate > self.threshold {
                self.cookies_on = true;
                self.low_since = None;
                return Some(switched);
            }
            return None;
        }
        if syn_rate >= self.threshold * OFF_FRACTION {
            self.low_since = None;
            return None;
        }
        let since = *self.low_since.get_or_insert(now);
        if now - since >= self.hold {
            self.cookies_on = false;
            self.low_since = None;
            return Some(switched);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_above_the_threshold_off_after_a_quiet_hold() {
        let mut switch = AutoSwitch::new(1000.0, 3.0);
        assert_eq!(
            switch.observe(0.0, 1000.0),
            None,
            "at the threshold: still direct"
        );
        let on = switch.observe(1.0, 1001.0).unwrap();
        assert!(on.cookies_on);
        assert_eq!(switch.observe(2.0, 600.0), None, "above half: stays on");
        assert_eq!(switch.observe(3.0, 100.0), None, "low since 3");
        assert_eq!(switch.observe(4.0, 100.0), None);
        assert_eq!(
            switch.observe(5.0, 700.0),
            None,
            "a pulse restarts the hold"
        );
        assert_eq!(switch.observe(6.0, 10.0), None);
        assert_eq!(switch.observe(8.0, 10.0), None);
        let off = switch.observe(9.0, 10.0).unwrap();
        assert!(!off.cookies_on);
        assert!(!switch.cookies_on);
        assert_eq!(switch.observe(10.0, 999.0), None);
    }
}
