//! The policy at work: every interval, the data plane's per-source and per-service counters in;
//! auto mode's switches and the policy's decisions out, applied to the data plane (the blocked
//! and allowed tries, the services map) and exported (log, JSON lines, ExaBGP lines, metrics).
//! The operator's `synguard block` and `synguard allow` land here too.

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow, bail};
use aya::maps::{
    Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, PerCpuHashMap, PerCpuValues,
};
use ipnet::IpNet;
use log::{info, warn};
use serde_json::json;
use synguard_common::{
    maps::{
        ALLOWED_MAP, AllowValue, BLOCKED_MAP, BlockValue, PROTECTED_MAP, ProtectedAddress,
        ProtectedPorts, SERVICE_COUNTERS_MAP, SERVICES_MAP, SOURCE_SKETCH_MAP, SOURCES_MAP,
        ServiceConfig, ServiceCounters, SourceCounters, SourceKey, VOUCHED_MAP, block_origin,
        vouched,
    },
    sketch::{SKETCH_BLOCK_CELLS, SKETCH_BLOCKS, SketchBlock, seed_tracked},
};

use crate::{
    clock::monotonic_coarse_ns,
    clock::unix_now,
    config::service::{ProtectedService, ServiceMode, service_name, slots_of},
    control::protocol::{PolicyStatus, Round, ServiceRow, ServiceStatus, SourceStatus},
    dataplane::map_source::MapSource,
    dataplane::maps::{lpm_key, service_config},
    dataplane::persist::Pins,
    export::lines::{Exports, decision_json, exabgp_line},
    policy::auto_mode::AutoSwitch,
    policy::engine::{
        Allow, Block, Decision, Lists, Outcome, Policy, Reason, Vouched, source_address,
    },
};

/// The configurations of services held by slot.
fn configs(services: &[Option<Service>]) -> Vec<Option<ProtectedService>> {
    services
        .iter()
        .map(|s| s.as_ref().map(|s| s.config.clone()))
        .collect()
}

impl Service {
    /// Whether its SYNs get cookies now.
    fn cookies_on(&self) -> bool {
        match &self.switch {
            Some(switch) => switch.cookies_on,
            None => self.config.mode == ServiceMode::Always,
        }
    }

    fn new(config: &ProtectedService, auto_syn_rate: f64, auto_hold: f64) -> Self {
        Service {
            switch: match config.mode {
                ServiceMode::Auto { syn_rate } => Some(AutoSwitch::new(
                    syn_rate.unwrap_or(auto_syn_rate),
                    auto_hold,
                )),
                _ => None,
            },
            config: config.clone(),
            last: ServiceCounters::default(),
            syn_rate: 0.0,
        }
    }
}

/// A protected service at work: its configuration, its auto switch, its last rate.
struct Service {
    config: ProtectedService,
    switch: Option<AutoSwitch>,
    last: ServiceCounters,
    syn_rate: f64,
}

pub struct PolicyControl {
    pub policy: Policy,
    /// The services by slot (index + 1); a removed service leaves its slot empty, so the
    /// others keep theirs (their counters and sources are keyed by it).
    services: Vec<Option<Service>>,
    auto_defaults: (f64, f64),
    protected: LpmTrie<MapData, ProtectedAddress, ProtectedPorts>,
    exports: Exports,
    sources: PerCpuHashMap<MapData, SourceKey, SourceCounters>,
    vouched: HashMap<MapData, SourceKey, u64>,
    sketch: PerCpuArray<MapData, SketchBlock>,
    service_counters: PerCpuArray<MapData, ServiceCounters>,
    service_configs: Array<MapData, ServiceConfig>,
    blocked: LpmTrie<MapData, ProtectedAddress, BlockValue>,
    allowed: LpmTrie<MapData, ProtectedAddress, AllowValue>,
    /// Decisions taken so far, by action and reason (for the metrics).
    pub decision_counts: BTreeMap<(Outcome, Reason), u64>,
    last_tick: Option<f64>,
    /// The last round: how many source entries it read, and how long it took (seconds).
    last_round: (usize, f64),
    /// Where the lists are saved for the next controller (None: not saved).
    pins: Option<Pins>,
}

/// The data plane's vouched map as the policy asks it (`now_ns`: monotonic coarse, its clock).
struct VouchedMap<'a> {
    map: &'a HashMap<MapData, SourceKey, u64>,
    now_ns: u64,
}

impl Vouched for VouchedMap<'_> {
    fn vouched(&self, key: &SourceKey) -> bool {
        self.map
            .get(key, 0)
            .is_ok_and(|validated_ns| vouched(validated_ns, self.now_ns))
    }

    fn any_inside(&self, prefix: &IpNet) -> bool {
        self.map.iter().flatten().any(|(key, validated_ns)| {
            vouched(validated_ns, self.now_ns) && prefix.contains(&source_address(&key))
        })
    }
}

/// The state file of the lists.
const LISTS_FILE: &str = "lists.json";

/// Seconds since the Unix epoch.
impl PolicyControl {
    /// Takes the policy's maps from the object (after the services were written).
    /// `auto_syn_rate` is the threshold of auto services that name none; `auto_hold` the
    /// seconds of calm before cookies go off.
    pub fn new(
        maps: &mut impl MapSource,
        policy: Policy,
        services: &[ProtectedService],
        auto_syn_rate: f64,
        auto_hold: f64,
        exports: Exports,
        pins: Option<Pins>,
    ) -> Result<Self> {
        let services = services
            .iter()
            .map(|config| Some(Service::new(config, auto_syn_rate, auto_hold)))
            .collect();
        Ok(Self {
            policy,
            services,
            auto_defaults: (auto_syn_rate, auto_hold),
            protected: maps.take(PROTECTED_MAP)?,
            exports,
            sources: maps.take(SOURCES_MAP)?,
            vouched: maps.take(VOUCHED_MAP)?,
            sketch: maps.take(SOURCE_SKETCH_MAP)?,
            service_counters: maps.take(SERVICE_COUNTERS_MAP)?,
            service_configs: maps.take(SERVICES_MAP)?,
            blocked: maps.take(BLOCKED_MAP)?,
            allowed: maps.take(ALLOWED_MAP)?,
            decision_counts: BTreeMap::new(),
            last_tick: None,
            last_round: (0, 0.0),
            pins,
        })
        .and_then(|mut control: Self| {
            // A restarted controller takes its predecessor's lists (the tries are pinned).
            if let Some(text) = control
                .pins
                .as_ref()
                .map(|p| p.read(LISTS_FILE))
                .transpose()?
                .flatten()
            {
                let lists: Lists =
                    serde_json::from_str(&text).context("the saved block and allow lists")?;
                info!(
                    "restored {} blocks and {} allows",
                    lists.blocks.len(),
                    lists.allows.len()
                );
                control.policy.restore(lists);
            }
            Ok(control)
        })
    }

    /// Saves the lists for the next controller.
    fn save_lists(&self) -> Result<()> {
        if let Some(pins) = &self.pins {
            pins.write(
                LISTS_FILE,
                serde_json::to_string(&self.policy.lists())?.as_bytes(),
            )?;
        }
        Ok(())
    }

    /// Auto mode's default threshold and hold, for services that name no threshold of their own.
    /// The data plane's direct-admission rates follow at once.
    pub fn set_auto(&mut self, default_syn_rate: f64, hold: f64) -> Result<()> {
        self.auto_defaults = (default_syn_rate, hold);
        for (index, service) in self.services.iter_mut().enumerate() {
            let Some(service) = service else { continue };
            if let (ServiceMode::Auto { syn_rate }, Some(switch)) =
                (service.config.mode, &mut service.switch)
            {
                switch.threshold = syn_rate.unwrap_or(default_syn_rate);
                switch.hold = hold;
                let config =
                    service_config(Some(&service.config), default_syn_rate, switch.cookies_on);
                self.service_configs
                    .set(index as u32 + 1, config, 0)
                    .with_context(|| format!("updating {}", service_name(&service.config)))?;
            }
        }
        Ok(())
    }

    pub fn set_exports(&mut self, exports: Exports) {
        self.exports = exports;
    }

    /// The service in `slot` (1-based), if any.
    fn service(&self, slot: u8) -> Option<&Service> {
        self.services.get((slot as usize).checked_sub(1)?)?.as_ref()
    }

    /// One policy interval: service rates and auto switches, then per-source decisions and
    /// expiries, all applied and exported.
    pub fn on_tick(&mut self, now: f64) -> Result<()> {
        let started = std::time::Instant::now();
        let elapsed = self.last_tick.map_or(0.0, |last| now - last);
        self.last_tick = Some(now);
        self.switch_services(now, elapsed)?;
        let mut samples = Vec::new();
        for item in self.sources.iter() {
            let (key, per_cpu) = item.context("reading the per-source counters")?;
            let mut sum = SourceCounters::default();
            for counters in per_cpu.iter() {
                sum.accumulate(counters);
            }
            samples.push((key, sum));
        }
        let monitor: Vec<u8> = self
            .services
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.as_ref()
                    .is_some_and(|s| s.config.mode == ServiceMode::Monitor)
            })
            .map(|(i, _)| (i + 1) as u8)
            .collect();
        let sources = samples.len();
        let vouched = VouchedMap {
            map: &self.vouched,
            now_ns: monotonic_coarse_ns(),
        };
        let mut decisions =
            self.policy
                .observe(now, samples, |slot| !monitor.contains(&slot), &vouched);
        self.clear_sketch(now)?;
        decisions.extend(self.policy.expire(now));
        let applied = self.apply(&decisions);
        self.last_round = (sources, started.elapsed().as_secs_f64());
        applied
    }

    /// Starts the sketch's next interval: new sources must pass its gate again to get
    /// counters. The sources active in the round observed at `now` are seeded past it (the
    /// data plane looks a source's counters up only once its sketch cells pass), not every
    /// source in the per-source map: in a flood that map fills with one-off sources, which
    /// would saturate the sketch.
    fn clear_sketch(&mut self, now: f64) -> Result<()> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| anyhow!("counting CPUs: {e}"))?;
        let mut blocks = vec![[0u8; SKETCH_BLOCK_CELLS]; SKETCH_BLOCKS as usize];
        for key in self.policy.active_at(now) {
            seed_tracked(&mut blocks, &key.addr);
        }
        for (index, block) in blocks.into_iter().enumerate() {
            let values = PerCpuValues::try_from(vec![block; cpus])?;
            self.sketch
                .set(index as u32, values, 0)
                .context("clearing the source sketch")?;
        }
        Ok(())
    }

    fn switch_services(&mut self, now: f64, elapsed: f64) -> Result<()> {
        for index in 0..self.services.len() {
            let slot = (index + 1) as u32;
            let mut sum = ServiceCounters::default();
            for counters in self.service_counters.get(&slot, 0)?.iter() {
                sum.accumulate(counters);
            }
            let Some(service) = &mut self.services[index] else {
                continue;
            };
            if elapsed > 0.0 {
                service.syn_rate = sum.syns.saturating_sub(service.last.syns) as f64 / elapsed;
            }
            service.last = sum;
            let Some(switch) = &mut service.switch else {
                continue;
            };
            if let Some(switched) = switch.observe(now, service.syn_rate) {
                let config =
                    service_config(Some(&service.config), switch.threshold, switched.cookies_on);
                self.service_configs.set(slot, config, 0)?;
                let name = service_name(&service.config);
                info!(
                    "{name}: cookies {} (SYN rate {:.0}/s, threshold {:.0}/s)",
                    if switched.cookies_on { "on" } else { "off" },
                    switched.syn_rate,
                    switched.threshold
                );
                let record = json!({
                    "type": "auto_mode",
                    "time": now,
                    "service": name,
                    "cookies_on": switched.cookies_on,
                    "syn_rate": switched.syn_rate,
                    "threshold": switched.threshold,
                });
                if let Some(log) = &self.exports.decision_log {
                    log.write_lines(&[record.to_string()])?;
                }
            }
        }
        Ok(())
    }

    /// Applies decisions to the data plane, then logs and exports them.
    fn apply(&mut self, decisions: &[Decision]) -> Result<()> {
        if decisions.is_empty() {
            return Ok(());
        }
        for decision in decisions {
            let key = lpm_key(&decision.prefix);
            match decision.action {
                Outcome::Block => {
                    let origin = if decision.reason == Reason::Operator {
                        block_origin::OPERATOR
                    } else {
                        block_origin::POLICY
                    };
                    self.blocked
                        .insert(&key, origin, 0)
                        .with_context(|| format!("blocking {}", decision.prefix))?;
                }
                Outcome::Unblock => match self.blocked.remove(&key) {
                    Ok(()) | Err(MapError::KeyNotFound) => {}
                    Err(error) => warn!("unblocking {}: {error}", decision.prefix),
                },
                Outcome::Report => {}
            }
            *self
                .decision_counts
                .entry((decision.action, decision.reason))
                .or_default() += 1;
            info!("{}", self.describe(decision));
        }
        if let Some(log) = &self.exports.decision_log {
            let lines: Vec<String> = decisions
                .iter()
                .map(|d| decision_json(d).to_string())
                .collect();
            log.write_lines(&lines)?;
        }
        self.save_lists()?;
        if let Some((sink, style)) = &self.exports.exabgp {
            let lines: Vec<String> = decisions
                .iter()
                .filter_map(|d| exabgp_line(d, style))
                .collect();
            sink.write_lines(&lines)?;
        }
        Ok(())
    }

    /// One log line of a decision.
    fn describe(&self, decision: &Decision) -> String {
        let service = self
            .service(decision.service)
            .map(|s| format!(" to {}", service_name(&s.config)))
            .unwrap_or_default();
        let until = decision
            .until
            .map(|until| format!(" for {:.0} s", until - decision.time))
            .unwrap_or_default();
        match (decision.action, decision.reason) {
            (_, Reason::Operator) => format!(
                "{} {} by the operator{until}",
                decision.action.name(),
                decision.prefix
            ),
            (Outcome::Unblock, _) => format!("unblock {}: its block expired", decision.prefix),
            (action, reason) => format!(
                "{} {}{service}: {} {:.0} over {:.0}{until} (offence {})",
                action.name(),
                decision.prefix,
                reason.name(),
                decision.measured,
                decision.limit,
                decision.offence
            ),
        }
    }

    /// `synguard block add`.
    pub fn block(&mut self, prefix: IpNet, ttl: Option<u64>) -> Result<Decision> {
        let decision = self
            .policy
            .block(unix_now(), prefix, ttl)
            .map_err(|e| anyhow!(e))?;
        self.apply(std::slice::from_ref(&decision))?;
        Ok(decision)
    }

    /// `synguard block del`.
    pub fn unblock(&mut self, prefix: IpNet) -> Result<Decision> {
        let decision = self
            .policy
            .unblock(unix_now(), prefix)
            .ok_or_else(|| anyhow!("{prefix} is not blocked (see `synguard block list`)"))?;
        self.apply(std::slice::from_ref(&decision))?;
        Ok(decision)
    }

    /// `synguard allow add`: never blocked; `bypass` also skips the cookie challenge.
    pub fn allow(&mut self, prefix: IpNet, bypass: bool) -> Result<Vec<Decision>> {
        self.allowed
            .insert(&lpm_key(&prefix.trunc()), bypass as AllowValue, 0)
            .with_context(|| format!("allowing {prefix}"))?;
        let lifted = self.policy.allow(unix_now(), prefix, bypass);
        self.apply(&lifted)?;
        self.save_lists()?;
        info!(
            "allow {}{}",
            prefix.trunc(),
            if bypass { " (no cookie challenge)" } else { "" }
        );
        Ok(lifted)
    }

    /// `synguard allow del`.
    pub fn disallow(&mut self, prefix: IpNet) -> Result<()> {
        self.policy.disallow(prefix).ok_or_else(|| {
            anyhow!("{prefix} is not on the allowlist (see `synguard allow list`)")
        })?;
        match self.allowed.remove(&lpm_key(&prefix.trunc())) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(error) => bail!("removing {prefix} from the allowlist: {error}"),
        }
        self.save_lists()?;
        info!("allow {} removed", prefix.trunc());
        Ok(())
    }

    /// `synguard protect add`: a new service in the next free slot, live; a service with the
    /// same prefix and ports changes its mode in place (no moment unprotected).
    pub fn protect(&mut self, service: ProtectedService) -> Result<()> {
        let name = service_name(&service);
        let same = self
            .services
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| service_name(&s.config) == name));
        let slot = match (same, self.services.iter().position(Option::is_none)) {
            (Some(same), _) => same,
            (None, Some(free)) => free,
            (None, None) => self.services.len(),
        };
        let mut services = configs(&self.services);
        if slot == services.len() {
            services.push(None);
        }
        services[slot] = Some(service.clone());
        self.write_services(&services)?;
        let (rate, hold) = self.auto_defaults;
        if slot == self.services.len() {
            self.services.push(None);
        }
        self.services[slot] = Some(Service::new(&service, rate, hold));
        info!(
            "protecting {} ({})",
            service_name(&service),
            service.mode.name()
        );
        Ok(())
    }

    /// `synguard protect del`: the service with these prefix and ports stops being protected
    /// (its validated flows go on).
    pub fn unprotect(&mut self, service: &ProtectedService) -> Result<()> {
        let name = service_name(service);
        let slot = self
            .services
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| service_name(&s.config) == name))
            .ok_or_else(|| anyhow!("{name} is not protected (see `synguard protect list`)"))?;
        let mut services = configs(&self.services);
        services[slot] = None;
        self.write_services(&services)?;
        self.services[slot] = None;
        info!("{name} no longer protected");
        Ok(())
    }

    /// Rewrites the services and protected-prefix maps for `services` (by slot): new and
    /// changed prefixes first, then the ones no service uses any more.
    fn write_services(&mut self, services: &[Option<ProtectedService>]) -> Result<()> {
        let slotted = services
            .iter()
            .enumerate()
            .filter_map(|(index, s)| s.as_ref().map(|s| ((index + 1) as u8, s)));
        let by_prefix = slots_of(slotted)?;
        for (index, service) in services.iter().enumerate() {
            // A service that stays as it was keeps its switch's state.
            let cookies_on = self
                .services
                .get(index)
                .and_then(Option::as_ref)
                .filter(|current| Some(&current.config) == service.as_ref())
                .and_then(|current| current.switch.as_ref())
                .is_some_and(|switch| switch.cookies_on);
            let config = service_config(service.as_ref(), self.auto_defaults.0, cookies_on);
            self.service_configs.set(index as u32 + 1, config, 0)?;
        }
        for (prefix, ports) in &by_prefix {
            self.protected
                .insert(&lpm_key(prefix), ports.as_ref(), 0)
                .with_context(|| format!("protecting {prefix}"))?;
        }
        let stale: Vec<IpNet> = self
            .services
            .iter()
            .flatten()
            .map(|s| s.config.prefix)
            .filter(|prefix| !by_prefix.contains_key(prefix))
            .collect();
        for prefix in stale {
            match self.protected.remove(&lpm_key(&prefix)) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(error) => bail!("unprotecting {prefix}: {error}"),
            }
        }
        Ok(())
    }

    /// `synguard protect list`.
    /// `synguard protect list`.
    pub fn services(&self) -> Vec<ServiceRow> {
        self.services
            .iter()
            .enumerate()
            .filter_map(|(index, s)| {
                s.as_ref().map(|s| ServiceRow {
                    slot: index as u8 + 1,
                    service: service_name(&s.config),
                    mode: s.config.mode.name().to_string(),
                    cookies_on: s.cookies_on(),
                })
            })
            .collect()
    }

    pub fn blocks(&self) -> Vec<Block> {
        self.policy.blocks().cloned().collect()
    }

    pub fn allows(&self) -> Vec<Allow> {
        self.policy.allows().cloned().collect()
    }

    /// The services and the sources with most half-open connections, for `synguard status`.
    pub fn status(&self, top: usize) -> PolicyStatus {
        let mut figures: Vec<_> = self.policy.figures().collect();
        figures.sort_by(|a, b| b.1.half_open.total_cmp(&a.1.half_open));
        PolicyStatus {
            services: self.service_figures(),
            half_open: Some(self.policy.half_open_total()),
            top_sources: figures
                .iter()
                .take(top)
                .map(|(key, f)| SourceStatus {
                    source: source_address(key).to_string(),
                    service: self.service(key.slot).map(|s| service_name(&s.config)),
                    half_open: f.half_open,
                    syn_rate: f.syn_rate,
                    invalid_ack_rate: f.invalid_ack_rate,
                    out_of_state_rate: f.out_of_state_rate,
                })
                .collect(),
            blocks: self.policy.blocks().count(),
            allows: self.policy.allows().count(),
            last_round: Some(Round {
                sources: self.last_round.0,
                seconds: self.last_round.1,
            }),
        }
    }

    pub fn service_figures(&self) -> Vec<ServiceStatus> {
        self.services
            .iter()
            .flatten()
            .map(|s| ServiceStatus {
                service: service_name(&s.config),
                mode: s.config.mode.name().to_string(),
                syn_rate: Some(s.syn_rate),
                cookies_on: s.cookies_on(),
                syns: s.last.syns,
                cookies_sent: s.last.cookies_sent,
                admitted: s.last.admitted,
            })
            .collect()
    }
}
