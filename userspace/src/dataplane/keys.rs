//! The cookie secret (from the operator's key file, the saved state, or the OS) and the key
//! schedule derived from it: which epoch's keys the data plane holds, rotated on time, by
//! hand, and written again when the system clock is stepped.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use aya::Ebpf;
use synguard_common::{
    cookie::{CookieKeys, epoch_key},
    siphash::SipKey,
};

use crate::{
    clock::{tai_offset_ns, unix_now},
    dataplane::maps::write_keys,
};

/// The master secret cookie keys derive from.
#[derive(Clone, Copy)]
pub struct CookieSecret(SipKey);

impl CookieSecret {
    /// 16 bytes from the OS CSPRNG.
    pub fn random() -> Result<Self> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|e| anyhow!("reading the OS random generator: {e}"))?;
        Ok(Self(SipKey::from_bytes(bytes)))
    }

    /// From a file shared by every guard behind the same ECMP group: 32 hex digits (the
    /// 128-bit secret) on the first line that is not blank or a `#` comment.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            let fix = match error.kind() {
                std::io::ErrorKind::NotFound => format!(
                    ": create it with `openssl rand -hex 16 > {}` and copy it to every guard of \
                     the group",
                    path.display()
                ),
                _ => String::new(),
            };
            anyhow!("reading cookie key file {}: {error}{fix}", path.display())
        })?;
        let line = text
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty() && !line.starts_with('#'))
            .ok_or_else(|| anyhow!("cookie key file {} holds no key", path.display()))?;
        Self::from_hex(line).with_context(|| format!("cookie key file {}", path.display()))
    }

    /// The secret as 32 hex digits, as [`CookieSecret::from_hex`] reads it.
    pub fn to_hex(&self) -> String {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.0.k0.to_le_bytes());
        bytes[8..].copy_from_slice(&self.0.k1.to_le_bytes());
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(hex: &str) -> Result<Self> {
        if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("the key must be 32 hex digits (128 bits), e.g. from `openssl rand -hex 16`");
        }
        let mut bytes = [0u8; 16];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?;
        }
        Ok(Self(SipKey::from_bytes(bytes)))
    }

    /// The keys in force at `unix_secs` when keys rotate every `rotation_secs`: guards sharing
    /// the secret and a clock agree on them.
    pub fn keys_at(&self, unix_secs: u64, rotation_secs: u64) -> (u64, CookieKeys) {
        let epoch = unix_secs / rotation_secs;
        (epoch, self.keys_of_epoch(epoch))
    }

    /// The keys of `epoch`: its own as the current one, the epoch before's as the previous.
    pub fn keys_of_epoch(&self, epoch: u64) -> CookieKeys {
        CookieKeys::new(
            epoch_key(&self.0, epoch),
            epoch_key(&self.0, epoch.wrapping_sub(1)),
            (epoch & 1) as u32,
        )
    }
}

/// The cookie keys over time: the epoch is the Unix time over the rotation period plus the
/// rotations asked for by hand (`synguard keys rotate`), so a manual rotation is simply the
/// next epoch early: a new current key, the old one still accepted as the previous.
pub struct KeySchedule {
    pub secret: CookieSecret,
    /// Manual rotations so far.
    pub extra: u64,
    /// The epoch whose keys are in the data plane.
    epoch: Option<u64>,
    /// The clock offset written with them.
    tai_offset_ns: u64,
}

/// How far the clock offset may move before the keys are written again with the new one: a
/// stepped system clock (NTP's slewing moves both clocks alike).
const CLOCK_STEP_NS: u64 = 1_000_000;

impl KeySchedule {
    pub fn new(secret: CookieSecret, extra: u64) -> Self {
        Self {
            secret,
            extra,
            epoch: None,
            tai_offset_ns: 0,
        }
    }

    fn epoch_now(&self, rotation_secs: u64) -> u64 {
        unix_now() as u64 / rotation_secs.max(1) + self.extra
    }

    /// Writes the keys when their epoch changed or the system clock was stepped; returns the
    /// epoch when it changed.
    pub fn update(&mut self, ebpf: &mut Ebpf, rotation_secs: u64) -> Result<Option<u64>> {
        let epoch = self.epoch_now(rotation_secs);
        let rotated = self.epoch != Some(epoch);
        if !rotated && !self.clock_stepped(tai_offset_ns()) {
            return Ok(None);
        }
        self.tai_offset_ns = write_keys(ebpf, &self.secret.keys_of_epoch(epoch))?;
        self.epoch = Some(epoch);
        Ok(rotated.then_some(epoch))
    }

    /// Whether the clock offset is now too far from the one written with the keys.
    fn clock_stepped(&self, tai_offset_ns: u64) -> bool {
        tai_offset_ns.abs_diff(self.tai_offset_ns) > CLOCK_STEP_NS
    }

    /// Rotates now; returns the new epoch.
    pub fn rotate(&mut self, ebpf: &mut Ebpf, rotation_secs: u64) -> Result<u64> {
        self.extra += 1;
        self.update(ebpf, rotation_secs)?;
        Ok(self.epoch_now(rotation_secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_written_again_when_the_clock_is_stepped_not_when_it_ticks() {
        let mut schedule = KeySchedule::new(CookieSecret(SipKey { k0: 1, k1: 2 }), 0);
        schedule.tai_offset_ns = tai_offset_ns();
        // Read again now: both clocks advanced together.
        assert!(!schedule.clock_stepped(tai_offset_ns()));
        assert!(!schedule.clock_stepped(schedule.tai_offset_ns + CLOCK_STEP_NS));
        assert!(schedule.clock_stepped(schedule.tai_offset_ns + 5_000_000_000));
        assert!(schedule.clock_stepped(schedule.tai_offset_ns - CLOCK_STEP_NS - 1));
    }

    #[test]
    fn key_files_and_schedules() {
        let dir = std::env::temp_dir().join(format!("synguard-key-{}", std::process::id()));
        std::fs::write(
            &dir,
            "# shared by guard-a and guard-b\n\n00112233445566778899aabbccddeeff\n",
        )
        .unwrap();
        let a = CookieSecret::from_file(&dir).unwrap();
        let b = CookieSecret::from_hex("00112233445566778899aabbccddeeff").unwrap();
        std::fs::remove_file(&dir).unwrap();
        let missing = CookieSecret::from_file(&dir).err().unwrap().to_string();
        assert!(
            missing.ends_with(&format!(
                "`openssl rand -hex 16 > {}` and copy it to every guard of the group",
                dir.display()
            )),
            "{missing}"
        );
        assert_eq!(a.keys_at(1000, 300), b.keys_at(1000, 300));
        let (epoch, keys) = a.keys_at(1000, 300);
        let (next_epoch, next) = a.keys_at(1200, 300);
        assert_eq!((epoch, next_epoch), (3, 4));
        assert_eq!(next.current_phase, keys.current_phase ^ 1);
        assert_eq!(
            next.by_phase[keys.current_phase as usize],
            *keys.current().0,
            "rotation keeps the last key, as the previous one"
        );
        let random = CookieSecret::random().unwrap();
        let again = CookieSecret::from_hex(&random.to_hex()).unwrap();
        assert_eq!(
            random.keys_at(1000, 300),
            again.keys_at(1000, 300),
            "hex roundtrip"
        );
        assert_eq!(b.to_hex(), "00112233445566778899aabbccddeeff");
        // A manual rotation is the next epoch early: the old current key stays as previous.
        let now = a.keys_of_epoch(epoch);
        let rotated = a.keys_of_epoch(epoch + 1);
        assert_eq!(
            rotated.by_phase[now.current_phase as usize],
            *now.current().0,
            "the key in force before a manual rotation is still accepted"
        );
        for bad in ["0011", "zz112233445566778899aabbccddeeff", ""] {
            let error = CookieSecret::from_hex(bad).err().unwrap().to_string();
            assert!(error.contains("32 hex digits"), "{error}");
        }
    }
}
