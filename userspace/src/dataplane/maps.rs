//! The controller's writers of the data plane's configuration maps: protected services (the
//! services array and the LPM trie of prefixes), the SYN-ACK and policy settings, the cookie
//! keys. Every value here has been checked by `config` first.

use anyhow::{Context, Result};
use aya::{
    Ebpf,
    maps::{Array, LpmTrie, lpm_trie::Key},
};
use ipnet::IpNet;
use synguard_common::{
    cookie::CookieKeys,
    maps::{
        COOKIE_KEYS_MAP, POLICY_SETTINGS_MAP, PROTECTED_MAP, PolicySettings, ProtectedAddress,
        ProtectedPorts, SERVICES_MAP, SYN_ACK_SETTINGS_MAP, ServiceConfig, ipv4_mapped,
    },
    segment::SynAckSettings,
};

use crate::{
    clock::tai_offset_ns,
    config::service::{ProtectedService, ServiceMode, service_slots},
};

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

#[cfg(test)]
mod tests {
    use synguard_common::maps::mode;

    use super::*;

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
    fn ipv4_prefixes_map_into_the_ipv6_trie() {
        let key = lpm_key(&"198.19.0.0/16".parse().unwrap());
        assert_eq!(key.prefix_len(), 112);
        assert_eq!(key.data(), ipv4_mapped(&[198, 19, 0, 0]));
    }
}
