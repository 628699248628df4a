//! A protected service as the operator writes it (`CIDR:PORTS[:MODE]`) and the checks that
//! a set of services fits the data plane (one service per port of a prefix, the slots and
//! prefixes there are room for). Everything here is refused before the kernel is touched.

use std::{collections::BTreeMap, net::IpAddr, str::FromStr};

use anyhow::{Result, anyhow, bail};
use ipnet::IpNet;
use synguard_common::maps::{PROTECTED_CAPACITY, ProtectedPorts, SERVICES_CAPACITY, mode};

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
    /// The mode of a data-plane code (auto mode's threshold is not in the code).
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            mode::MONITOR => Some(ServiceMode::Monitor),
            mode::AUTO => Some(ServiceMode::Auto { syn_rate: None }),
            mode::ALWAYS => Some(ServiceMode::Always),
            _ => None,
        }
    }

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

/// A service as the operator wrote it (ports compressed into ranges).
pub fn service_name(service: &ProtectedService) -> String {
    let mut ranges: Vec<String> = Vec::new();
    let mut ports = service.ports.clone();
    ports.sort_unstable();
    ports.dedup();
    let mut iter = ports.into_iter().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end.wrapping_add(1))) {
            end = iter.next().unwrap_or(end);
        }
        ranges.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    let prefix = match service.prefix {
        IpNet::V6(net) => format!("[{net}]"),
        IpNet::V4(net) => net.to_string(),
    };
    format!("{prefix}:{}", ranges.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn service_names_read_like_the_flag() {
        for text in [
            "198.19.1.2/32:80",
            "198.19.1.0/24:80,443,8000-8002",
            "[2001:db8::/64]:443",
        ] {
            let service: ProtectedService = text.parse().unwrap();
            assert_eq!(service_name(&service), text);
        }
    }
}
