//! What the controller writes into the data plane's maps: protected services, cookie keys and
//! the SYN-ACK settings. Parsing and validation of the operator's values live here too, so
//! every bad value is refused before anything is written.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::Path,
    str::FromStr,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Ebpf,
    maps::{Array, LpmTrie, lpm_trie::Key},
};
use ipnet::IpNet;
use synguard_common::{
    cookie::{CookieKeys, epoch_key},
    maps::{
        COOKIE_KEYS_MAP, POLICY_SETTINGS_MAP, PROTECTED_CAPACITY, PROTECTED_MAP, PolicySettings,
        ProtectedAddress, ProtectedPorts, SERVICES_CAPACITY, SERVICES_MAP, SYN_ACK_SETTINGS_MAP,
        ServiceConfig, ipv4_mapped, mode,
    },
    segment::SynAckSettings,
    siphash::SipKey,
};

use crate::clock::tai_offset_ns;

/// A protected service: a destination prefix, its TCP ports and its mode
/// (`CIDR:PORTS[:MODE]`, for example `198.19.1.2/32:80,443`, `198.19.1.2:80:auto=2000` or
/// `[2001:db8::/64]:8000-8100:monitor`).
#[derive(Clone, Debug, PartialEq)]
pub struct ProtectedService {
    pub prefix: IpNet,
    pub ports: Vec<u16>,
    pub mode: ServiceMode,
}

/// How a service treats SYNs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ServiceMode {
    /// Count and report, never act.
    Monitor,
    /// Straight to the server while its SYN rate stays under the threshold (SYN/s; `None`:
    /// the `--auto-syn-rate` default), cookies above it.
    Auto { syn_rate: Option<f64> },
    /// Cookie every SYN.
    Always,
}

impl ServiceMode {
    pub fn code(self) -> u8 {
        match self {
            ServiceMode::Monitor => mode::MONITOR,
            ServiceMode::Auto { .. } => mode::AUTO,
            ServiceMode::Always => mode::ALWAYS,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ServiceMode::Monitor => "monitor",
            ServiceMode::Auto { .. } => "auto",
            ServiceMode::Always => "always",
        }
    }
}

impl FromStr for ServiceMode {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        let hint = "modes are monitor, always, auto or auto=SYN_PER_SECOND";
        match text {
            "monitor" => Ok(ServiceMode::Monitor),
            "always" => Ok(ServiceMode::Always),
            "auto" => Ok(ServiceMode::Auto { syn_rate: None }),
            _ => match text.strip_prefix("auto=").map(str::parse::<f64>) {
                Some(Ok(rate)) if rate >= 1.0 && rate.is_finite() => Ok(ServiceMode::Auto {
                    syn_rate: Some(rate),
                }),
                Some(_) => {
                    bail!("{text:?}: the auto threshold is a SYN rate of at least 1 per second")
                }
                None => bail!("{text:?} is not a mode: {hint}"),
            },
        }
    }
}

impl FromStr for ProtectedService {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        let hint = "expected CIDR:PORTS[:MODE], e.g. 198.19.1.2/32:80,443, 198.19.1.2:80:auto \
                    or [2001:db8::/64]:8000-8100:monitor";
        let (prefix, rest) = match text.strip_prefix('[') {
            Some(rest) => rest
                .split_once("]:")
                .ok_or_else(|| anyhow!("{text:?}: {hint}"))?,
            None => text
                .split_once(':')
                .ok_or_else(|| anyhow!("{text:?}: {hint}"))?,
        };
        let (ports, mode) = match rest.split_once(':') {
            Some((ports, mode)) => (ports, mode.parse::<ServiceMode>()?),
            None => (rest, ServiceMode::Always),
        };
        let prefix = match prefix.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => IpNet::from(
                prefix
                    .parse::<IpAddr>()
                    .map_err(|_| anyhow!("{prefix:?} is not an address or prefix: {hint}"))?,
            ),
        };
        let mut list = Vec::new();
        for part in ports.split(',') {
            let port = |p: &str| {
                p.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| anyhow!("{p:?} is not a port (1-65535): {hint}"))
            };
            match part.split_once('-') {
                Some((from, to)) => {
                    let (from, to) = (port(from)?, port(to)?);
                    if from > to {
                        bail!("port range {part:?} runs backwards: {hint}");
                    }
                    list.extend(from..=to);
                }
                None => list.push(port(part)?),
            }
        }
        Ok(ProtectedService {
            prefix: prefix.trunc(),
            ports: list,
            mode,
        })
    }
}

/// The LPM key of a prefix: IPv4 as IPv4-mapped IPv6.
pub fn lpm_key(prefix: &IpNet) -> Key<ProtectedAddress> {
    match prefix {
        IpNet::V4(net) => Key::new(
            96 + net.prefix_len() as u32,
            ipv4_mapped(&net.addr().octets()),
        ),
        IpNet::V6(net) => Key::new(net.prefix_len() as u32, net.addr().octets()),
    }
}

/// The data plane's view of the services: for each prefix, the slot of each port; slot
/// `i + 1` is `services[i]`. Refused when two services claim the same port of a prefix.
pub fn service_slots(
    services: &[ProtectedService],
) -> Result<BTreeMap<IpNet, Box<ProtectedPorts>>> {
    slots_of(
        services
            .iter()
            .enumerate()
            .map(|(index, service)| ((index + 1) as u8, service)),
    )
}

/// [`service_slots`] for services in given slots (slots of removed services stay empty).
pub fn slots_of<'a>(
    services: impl Iterator<Item = (u8, &'a ProtectedService)> + Clone,
) -> Result<BTreeMap<IpNet, Box<ProtectedPorts>>> {
    if services
        .clone()
        .any(|(slot, _)| slot as u32 >= SERVICES_CAPACITY || slot == 0)
    {
        bail!("at most {} protected services fit", SERVICES_CAPACITY - 1);
    }
    let mut by_prefix: BTreeMap<IpNet, Box<ProtectedPorts>> = BTreeMap::new();
    for (slot, service) in services {
        let ports = by_prefix.entry(service.prefix).or_default();
        for port in &service.ports {
            let taken = ports.slot(*port);
            if taken != 0 {
                bail!(
                    "port {port} of {} is protected twice (services {taken} and {slot}): give each port one mode",
                    service.prefix,
                );
            }
            ports.insert(*port, slot);
        }
    }
    if by_prefix.len() > PROTECTED_CAPACITY as usize {
        bail!(
            "{} protected prefixes given; at most {PROTECTED_CAPACITY} fit",
            by_prefix.len()
        );
    }
    Ok(by_prefix)
}

/// The data plane's view of a service (`None`: an empty slot): its mode, auto mode's switch
/// and the SYN rate auto mode lets straight through on each CPU, which is the service's own
/// threshold or `auto_syn_rate`, the default.
pub fn service_config(
    service: Option<&ProtectedService>,
    auto_syn_rate: f64,
    cookies_on: bool,
) -> ServiceConfig {
    let direct_syn_rate = match service.map(|s| s.mode) {
        Some(ServiceMode::Auto { syn_rate }) => syn_rate
            .unwrap_or(auto_syn_rate)
            .ceil()
            .min(u32::MAX as f64) as u32,
        _ => 0,
    };
    ServiceConfig {
        mode: service.map_or(0, |s| s.mode.code()),
        cookies_on: cookies_on as u8,
        _pad: [0; 2],
        direct_syn_rate,
    }
}

/// Writes the protected services (auto mode's default threshold `auto_syn_rate`): each one's
/// mode, then the ports of each prefix.
pub fn write_protected(
    ebpf: &mut Ebpf,
    services: &[ProtectedService],
    auto_syn_rate: f64,
) -> Result<()> {
    let by_prefix = service_slots(services)?;
    let mut configs: Array<_, ServiceConfig> = Array::try_from(
        ebpf.map_mut(SERVICES_MAP)
            .context("services map missing from the eBPF object")?,
    )?;
    for (index, service) in services.iter().enumerate() {
        let config = service_config(Some(service), auto_syn_rate, false);
        configs.set(index as u32 + 1, config, 0)?;
    }
    let mut trie: LpmTrie<_, ProtectedAddress, ProtectedPorts> = LpmTrie::try_from(
        ebpf.map_mut(PROTECTED_MAP)
            .context("protected-services map missing from the eBPF object")?,
    )?;
    for (prefix, ports) in &by_prefix {
        trie.insert(&lpm_key(prefix), ports.as_ref(), 0)
            .with_context(|| format!("protecting {prefix}"))?;
    }
    Ok(())
}

/// Turns auto mode's cookies on or off for the service in `slot`.
pub fn write_cookies_on(
    ebpf: &mut Ebpf,
    slot: u8,
    service: &ProtectedService,
    auto_syn_rate: f64,
    on: bool,
) -> Result<()> {
    let mut configs: Array<_, ServiceConfig> = Array::try_from(
        ebpf.map_mut(SERVICES_MAP)
            .context("services map missing from the eBPF object")?,
    )?;
    configs.set(
        slot as u32,
        service_config(Some(service), auto_syn_rate, on),
        0,
    )?;
    Ok(())
}

pub fn write_policy_settings(ebpf: &mut Ebpf, settings: &PolicySettings) -> Result<()> {
    write_single(ebpf, POLICY_SETTINGS_MAP, settings)
}

/// Writes the SYN-ACK settings as they replace those in the map at cookie counter `now`
/// (see `SynAckSettings::succeeding`: a zero window just ended still has its probes read).
pub fn write_settings(ebpf: &mut Ebpf, settings: &SynAckSettings, now: u32) -> Result<()> {
    let previous: SynAckSettings = read_single(ebpf, SYN_ACK_SETTINGS_MAP)?;
    write_single(
        ebpf,
        SYN_ACK_SETTINGS_MAP,
        &settings.succeeding(&previous, now),
    )
}

/// Writes the keys with the clock offset of now ([`tai_offset_ns`]); returns the offset.
pub fn write_keys(ebpf: &mut Ebpf, keys: &CookieKeys) -> Result<u64> {
    let tai_offset_ns = tai_offset_ns();
    write_keys_with_offset(ebpf, keys, tai_offset_ns)?;
    Ok(tai_offset_ns)
}

/// Writes the keys with the given clock offset (a test's stepped clock).
pub fn write_keys_with_offset(
    ebpf: &mut Ebpf,
    keys: &CookieKeys,
    tai_offset_ns: u64,
) -> Result<()> {
    let keys = CookieKeys {
        tai_offset_ns,
        ..*keys
    };
    write_single(ebpf, COOKIE_KEYS_MAP, &keys)
}

/// Reads the one entry of a one-entry array map.
fn read_single<V: aya::Pod>(ebpf: &Ebpf, name: &str) -> Result<V> {
    let array: Array<_, V> = Array::try_from(
        ebpf.map(name)
            .with_context(|| format!("map {name} missing from the eBPF object"))?,
    )?;
    Ok(array.get(&0, 0)?)
}

/// Writes the one entry of a one-entry array map.
fn write_single<V: aya::Pod>(ebpf: &mut Ebpf, name: &str, value: &V) -> Result<()> {
    let mut array: Array<_, V> = Array::try_from(
        ebpf.map_mut(name)
            .with_context(|| format!("map {name} missing from the eBPF object"))?,
    )?;
    array.set(0, value, 0)?;
    Ok(())
}

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
        unix_now() / rotation_secs.max(1) + self.extra
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

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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
    fn protected_service_syntax() {
        let s: ProtectedService = "198.19.1.2/32:80,443".parse().unwrap();
        assert_eq!(s.prefix, "198.19.1.2/32".parse::<IpNet>().unwrap());
        assert_eq!(s.ports, [80, 443]);
        let s: ProtectedService = "198.19.1.7:8000-8002".parse().unwrap();
        assert_eq!(s.prefix.prefix_len(), 32);
        assert_eq!(s.ports, [8000, 8001, 8002]);
        let s: ProtectedService = "[2001:db8::1/64]:443".parse().unwrap();
        assert_eq!(
            s.prefix,
            "2001:db8::/64".parse::<IpNet>().unwrap(),
            "host bits cleared"
        );
        let s: ProtectedService = "[2001:db8::1]:443".parse().unwrap();
        assert_eq!(s.prefix.prefix_len(), 128);
        assert_eq!(s.mode, ServiceMode::Always, "cookies unless told otherwise");
        let s: ProtectedService = "198.19.1.2:80,81:monitor".parse().unwrap();
        assert_eq!(
            (s.ports.as_slice(), s.mode),
            (&[80, 81][..], ServiceMode::Monitor)
        );
        let s: ProtectedService = "198.19.1.2/32:80:auto".parse().unwrap();
        assert_eq!(s.mode, ServiceMode::Auto { syn_rate: None });
        let s: ProtectedService = "[2001:db8::/64]:443:auto=2500".parse().unwrap();
        assert_eq!(
            s.mode,
            ServiceMode::Auto {
                syn_rate: Some(2500.0)
            }
        );
    }

    #[test]
    fn auto_services_carry_their_threshold_to_the_data_plane() {
        let config = |text: &str, cookies_on| {
            let service: ProtectedService = text.parse().unwrap();
            let config = service_config(Some(&service), 1000.0, cookies_on);
            (config.mode, config.cookies_on, config.direct_syn_rate)
        };
        assert_eq!(config("198.19.1.2:80:auto", false), (mode::AUTO, 0, 1000));
        assert_eq!(config("198.19.1.2:80:auto=2.5", true), (mode::AUTO, 1, 3));
        assert_eq!(config("198.19.1.2:80", false), (mode::ALWAYS, 0, 0));
        assert_eq!(
            config("198.19.1.2:80:monitor", false),
            (mode::MONITOR, 0, 0)
        );
        assert_eq!(
            service_config(None, 1000.0, false),
            ServiceConfig::default()
        );
    }

    #[test]
    fn each_port_of_a_prefix_has_one_service() {
        let services: Vec<ProtectedService> = [
            "198.19.1.2:80,443",
            "198.19.1.0/24:80:auto",
            "198.19.1.2:8080:monitor",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let slots = service_slots(&services).unwrap();
        let host = &slots[&"198.19.1.2/32".parse::<IpNet>().unwrap()];
        assert_eq!(
            (
                host.slot(80),
                host.slot(443),
                host.slot(8080),
                host.slot(81)
            ),
            (1, 1, 3, 0)
        );
        assert_eq!(
            slots[&"198.19.1.0/24".parse::<IpNet>().unwrap()].slot(80),
            2
        );
        let clash: Vec<ProtectedService> = ["198.19.1.2:80", "198.19.1.2:79-81:monitor"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let error = service_slots(&clash).unwrap_err().to_string();
        assert!(
            error.contains("port 80 of 198.19.1.2/32 is protected twice"),
            "{error}"
        );
    }

    #[test]
    fn bad_protected_services_say_what_is_wrong() {
        for (text, says) in [
            ("198.19.1.2/32", "expected CIDR:PORTS"),
            ("198.19.1.2:80:fast", "not a mode"),
            ("198.19.1.2:80:auto=0", "at least 1 per second"),
            ("198.19.1.2:80:auto=x", "at least 1 per second"),
            ("198.19.1.2/33:80", "not an address or prefix"),
            ("198.19.1.2:0", "not a port"),
            ("198.19.1.2:70000", "not a port"),
            ("198.19.1.2:90-80", "runs backwards"),
            ("[2001:db8::/64:443", "expected CIDR:PORTS"),
            ("example.com:80", "not an address or prefix"),
        ] {
            let error = text.parse::<ProtectedService>().unwrap_err().to_string();
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn ipv4_prefixes_map_into_the_ipv6_trie() {
        let key = lpm_key(&"198.19.0.0/16".parse().unwrap());
        assert_eq!(key.prefix_len(), 112);
        assert_eq!(key.data(), ipv4_mapped(&[198, 19, 0, 0]));
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
