//! Answers from a guard's pinned maps when no controller runs: the data plane keeps guarding
//! after a controller's SIGTERM, and the operator can still read it and change its lists.
//!
//! The answers are the controller's own reply types, built by the same code from the same
//! maps; what only a controller knows (rates, ages, the policy's figures) is left out, and
//! what only a controller can do (settings, keys, services, timed blocks) is refused.

use std::{
    collections::{BTreeMap, HashMap as StdHashMap},
    net::IpAddr,
    time::Duration,
};

use anyhow::{Result, bail};
use aya::maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray};
use ipnet::IpNet;
use synguard_common::{
    cookie::FlowKey,
    maps::{
        FLOWS_MAP, FlowEntry, MAP_LAYOUT_VERSION, PROTECTED_MAP, ProtectedAddress, ProtectedPorts,
        SERVICE_COUNTERS_MAP, SERVICES_CAPACITY, SERVICES_MAP, ServiceConfig, ServiceCounters,
    },
};

use crate::{
    clock::monotonic_coarse_ns,
    config::service::{ProtectedService, ServiceMode, service_name},
    control::protocol::{PolicyStatus, Reply, Request, ServiceRow, ServiceStatus, Status},
    dataplane::{counters, map_source::MapSource, object, persist::Pins},
    export::lines::Exports,
    flows::table::{FlowTable, FlowTimers},
    policy::{
        control::PolicyControl,
        engine::{BlockRules, Limits, Policy},
    },
};

/// Answers `request` for the guard on `iface` from its pins under `bpffs`.
pub fn answer(iface: &str, bpffs: &std::path::Path, request: Request) -> Result<Reply> {
    let mut pins = Pins::of(iface, bpffs);
    if !pins.dir.exists() {
        bail!("no synguard is attached to {iface} in this network namespace");
    }
    pins.check_layout(MAP_LAYOUT_VERSION)?;
    let needs_controller = |verb: &str| -> Result<Reply> {
        bail!(
            "`synguard {verb}` needs a running controller, and none answers for {iface}: \
             start one with `synguard run --iface {iface}` (it adopts the running guard)"
        )
    };
    Ok(match request {
        Request::Stats => {
            let reading = counters::read(&object::counters_map(&mut pins)?)?;
            Reply::Stats(counters::stats(iface, &reading, None, Duration::ZERO))
        }
        Request::Flows => {
            let (table, entries) = adopted_flows(&mut pins)?;
            let mut flows = table.rows(
                |key| entries.get(key).copied().unwrap_or_default(),
                monotonic_coarse_ns(),
            );
            // Adopted just now: how long ago a flow was validated is the controller's to know.
            for row in &mut flows {
                row.age_s = None;
            }
            Reply::Flows { flows }
        }
        Request::Status => {
            let (table, _) = adopted_flows(&mut pins)?;
            let services = services(&mut pins)?;
            let policy = policy_of(&mut pins)?;
            Reply::Status(Status {
                flows: table.status(),
                policy: PolicyStatus {
                    services: services.into_iter().map(|(status, _)| status).collect(),
                    half_open: None,
                    top_sources: Vec::new(),
                    blocks: policy.blocks().len(),
                    allows: policy.allows().len(),
                    last_round: None,
                },
            })
        }
        Request::ProtectList => Reply::Services {
            services: services(&mut pins)?
                .into_iter()
                .map(|(_, row)| row)
                .collect(),
        },
        Request::BlockList => Reply::Blocks {
            blocks: policy_of(&mut pins)?.blocks(),
        },
        Request::AllowList => Reply::Allows {
            allows: policy_of(&mut pins)?.allows(),
        },
        Request::BlockAdd { ttl: Some(_), .. } => bail!(
            "a block with --ttl needs a running controller to lift it, and none answers for \
             {iface}: block without --ttl, or start one with `synguard run --iface {iface}`"
        ),
        Request::BlockAdd { prefix, ttl: None } => Reply::Decision {
            decision: policy_of(&mut pins)?.block(prefix, None)?,
        },
        Request::BlockDel { prefix } => Reply::Decision {
            decision: policy_of(&mut pins)?.unblock(prefix)?,
        },
        Request::AllowAdd { prefix, bypass } => Reply::Allowed {
            lifted: policy_of(&mut pins)?.allow(prefix, bypass)?,
        },
        Request::AllowDel { prefix } => {
            policy_of(&mut pins)?.disallow(prefix)?;
            Reply::Disallowed
        }
        Request::Get => needs_controller("get")?,
        Request::Set { .. } => needs_controller("set")?,
        Request::KeysRotate => needs_controller("keys rotate")?,
        Request::Detach => needs_controller("detach")?,
        Request::ProtectAdd { .. } => needs_controller("protect add")?,
        Request::ProtectDel { .. } => needs_controller("protect del")?,
    })
}

/// The flows map's entries, adopted into a flow table as a restarted controller adopts them.
fn adopted_flows(pins: &mut Pins) -> Result<(FlowTable, StdHashMap<FlowKey, FlowEntry>)> {
    let map: HashMap<MapData, FlowKey, FlowEntry> = pins.take(FLOWS_MAP)?;
    let entries: StdHashMap<FlowKey, FlowEntry> = map.iter().filter_map(Result::ok).collect();
    let mut table = FlowTable::new(FlowTimers::default());
    let now = monotonic_coarse_ns();
    for (key, entry) in &entries {
        table.adopt(*key, entry, now);
    }
    Ok((table, entries))
}

/// The block and allow lists as the last controller left them (its saved lists, the tries).
fn policy_of(pins: &mut Pins) -> Result<PolicyControl> {
    let saved = pins.clone();
    PolicyControl::new(
        pins,
        Policy::new(Limits::default(), BlockRules::default()),
        &[],
        0.0,
        0.0,
        Exports::default(),
        Some(saved),
    )
}

/// The protected services as the data plane holds them: the ports of each prefix in the
/// trie, by the slot that serves them, and each slot's mode and counters.
fn services(pins: &mut Pins) -> Result<Vec<(ServiceStatus, ServiceRow)>> {
    let trie: LpmTrie<MapData, ProtectedAddress, ProtectedPorts> = pins.take(PROTECTED_MAP)?;
    let configs: Array<MapData, ServiceConfig> = pins.take(SERVICES_MAP)?;
    let counters: PerCpuArray<MapData, ServiceCounters> = pins.take(SERVICE_COUNTERS_MAP)?;
    let mut by_slot: BTreeMap<u8, ProtectedService> = BTreeMap::new();
    for key in trie.keys() {
        let key = key?;
        let ports = trie.get(&key, 0)?;
        let prefix = prefix_of(key.prefix_len(), key.data());
        for port in 1..=u16::MAX {
            let slot = ports.slot(port);
            if slot == 0 || u32::from(slot) >= SERVICES_CAPACITY {
                continue;
            }
            let Some(mode) = ServiceMode::from_code(configs.get(&u32::from(slot), 0)?.mode) else {
                continue;
            };
            by_slot
                .entry(slot)
                .or_insert_with(|| ProtectedService {
                    prefix,
                    ports: Vec::new(),
                    mode,
                })
                .ports
                .push(port);
        }
    }
    let mut services = Vec::new();
    for (slot, service) in by_slot {
        let config = configs.get(&u32::from(slot), 0)?;
        let cookies_on = match service.mode {
            ServiceMode::Always => true,
            ServiceMode::Monitor => false,
            ServiceMode::Auto { .. } => config.cookies_on != 0,
        };
        let mut sum = ServiceCounters::default();
        for cpu in counters.get(&u32::from(slot), 0)?.iter() {
            sum.syns += cpu.syns;
            sum.cookies_sent += cpu.cookies_sent;
            sum.admitted += cpu.admitted;
        }
        let name = service_name(&service);
        let mode = service.mode.name().to_string();
        services.push((
            ServiceStatus {
                service: name.clone(),
                mode: mode.clone(),
                syn_rate: None,
                cookies_on,
                syns: sum.syns,
                cookies_sent: sum.cookies_sent,
                admitted: sum.admitted,
            },
            ServiceRow {
                slot,
                service: name,
                mode,
                cookies_on,
            },
        ));
    }
    Ok(services)
}

/// A trie key's prefix: IPv4 as IPv4-mapped IPv6 (`dataplane::maps::lpm_key`) back to IPv4.
fn prefix_of(len: u32, address: ProtectedAddress) -> IpNet {
    let v6 = std::net::Ipv6Addr::from(address);
    match v6.to_ipv4_mapped() {
        Some(v4) if len >= 96 => IpNet::new(IpAddr::V4(v4), (len - 96) as u8),
        _ => IpNet::new(IpAddr::V6(v6), len as u8),
    }
    .expect("a trie prefix fits its family")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::maps::lpm_key;

    #[test]
    fn trie_keys_turn_back_into_the_prefixes_they_came_from() {
        for text in [
            "198.19.1.0/24",
            "198.19.1.2/32",
            "2001:db8::/64",
            "0.0.0.0/0",
        ] {
            let prefix: IpNet = text.parse().unwrap();
            let key = lpm_key(&prefix);
            assert_eq!(prefix_of(key.prefix_len(), key.data()), prefix, "{text}");
        }
    }
}
