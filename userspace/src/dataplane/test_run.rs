//! The data-plane harness: the real compiled guard program, run on frames through
//! BPF_PROG_TEST_RUN. Used by the data-plane tests and the XDP benchmark.

use anyhow::{Context, Result, anyhow};
use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{TestRun, TestRunOptions, Xdp},
};
use log::LevelFilter;
use synguard_common::{
    cookie::{CookieKeys, FlowKey},
    counters::CounterBlock,
    maps::{
        ALLOWED_MAP, AllowValue, BLOCKED_MAP, BlockValue, FLOW_EVENTS_MAP, FLOWS_MAP,
        FORGOTTEN_MAP, FlowEntry, ForgottenFlow, LAB_FLOOD_FRAME_LEN, LAB_FLOOD_TEMPLATE_MAP,
        PolicySettings, ProtectedAddress, SOURCES_MAP, SourceCounters, SourceKey, VOUCHED_MAP,
        block_origin,
    },
    segment::SynAckSettings,
    verdict::Action,
};

use crate::{
    clock,
    config::service::ProtectedService,
    dataplane::counters,
    dataplane::maps,
    dataplane::object,
    flows::events::{self, Event, Record},
    flows::filter::FlowFilter,
    policy::auto_mode::DEFAULT_AUTO_SYN_RATE,
};

/// What one run of the program did to one frame.
#[derive(Debug)]
pub struct Outcome {
    /// The raw `enum xdp_action` value.
    pub xdp_code: u32,
    /// The frame as the program left it.
    pub output: Vec<u8>,
}

impl Outcome {
    /// The action, or an error naming the unexpected code (XDP_ABORTED, a stray XDP_TX...).
    pub fn action(&self) -> Result<Action> {
        Action::from_xdp_code(self.xdp_code)
            .ok_or_else(|| anyhow!("unexpected XDP action {}", self.xdp_code))
    }
}

pub struct DataPlane {
    ebpf: Ebpf,
    program: String,
    /// The guard's counters (the lab object has none).
    counters: Option<PerCpuArray<MapData, CounterBlock>>,
    events: Option<RingBuf<MapData>>,
    flow_filter: Option<FlowFilter>,
}

impl DataPlane {
    /// Loads a fresh copy of the object (fresh maps) and the named program.
    pub fn load(program: &str) -> Result<Self> {
        let mut ebpf = object::load(LevelFilter::Off)?;
        object::load_stages(&mut ebpf)?;
        object::load_xdp(&mut ebpf, program)?;
        let counters = object::counters_map(&mut ebpf)?;
        Ok(Self {
            ebpf,
            program: program.to_string(),
            counters: Some(counters),
            events: None,
            flow_filter: None,
        })
    }

    /// Loads a fresh copy of the lab object (see [`crate::lab`]) and the named program.
    pub fn load_lab(program: &str) -> Result<Self> {
        let mut ebpf = crate::lab::load(&[])?;
        object::load_xdp(&mut ebpf, program)?;
        Ok(Self {
            ebpf,
            program: program.to_string(),
            counters: None,
            events: None,
            flow_filter: None,
        })
    }

    /// Writes what the controller writes by default: keys, protected services (auto mode's
    /// default threshold), SYN-ACK settings.
    pub fn configure(&mut self, keys: &CookieKeys, protected: &[ProtectedService]) -> Result<()> {
        maps::write_keys(&mut self.ebpf, keys)?;
        maps::write_protected(&mut self.ebpf, protected, DEFAULT_AUTO_SYN_RATE)?;
        maps::write_settings(
            &mut self.ebpf,
            &SynAckSettings::default(),
            clock::cookie_counter_now(),
        )
    }

    /// Replaces the cookie keys (a rotation).
    pub fn set_keys(&mut self, keys: &CookieKeys) -> Result<()> {
        maps::write_keys(&mut self.ebpf, keys).map(|_| ())
    }

    /// Replaces the cookie keys with the data plane's clock `ahead_ns` ahead of TAI (as if
    /// the system clock had been stepped after the controller wrote them).
    pub fn set_keys_with_clock_ahead(&mut self, keys: &CookieKeys, ahead_ns: u64) -> Result<()> {
        let offset = clock::tai_offset_ns().wrapping_add(ahead_ns);
        maps::write_keys_with_offset(&mut self.ebpf, keys, offset)
    }

    /// Ring-buffer records (flow events and early data) emitted since the last call.
    pub fn records(&mut self) -> Result<Vec<Record>> {
        if self.counters.is_none() {
            // A lab object's plane: it has no event ring, and so no events.
            return Ok(Vec::new());
        }
        if self.events.is_none() {
            let map = self
                .ebpf
                .take_map(FLOW_EVENTS_MAP)
                .context("flow event ring buffer missing")?;
            self.events = Some(RingBuf::try_from(map)?);
        }
        let ring = self.events.as_mut().expect("just set");
        let mut records = Vec::new();
        while let Some(record) = ring.next() {
            records.push(
                events::decode(&record)
                    .context("a flow event record the controller cannot decode")?,
            );
        }
        Ok(records)
    }

    /// Flow events emitted since the last call (early data records are left out).
    pub fn events(&mut self) -> Result<Vec<Event>> {
        Ok(self
            .records()?
            .into_iter()
            .filter_map(|record| match record {
                Record::Event(event) => Some(event),
                Record::EarlyData(_) => None,
            })
            .collect())
    }

    /// The validated flow recorded for `flow`, if any.
    pub fn flow(&self, flow: &FlowKey) -> Result<Option<FlowEntry>> {
        let map: HashMap<_, FlowKey, FlowEntry> =
            HashMap::try_from(self.ebpf.map(FLOWS_MAP).context("flows map missing")?)?;
        found(map.get(flow, 0))
    }

    /// Puts `entry` into the flows map behind the flows filter's back (nothing but the data
    /// plane inserts flows: this stands for a flow the filter lost).
    pub fn put_flow_unfiltered(&mut self, flow: &FlowKey, entry: &FlowEntry) -> Result<()> {
        self.flows_map()?.insert(flow, entry, 0)?;
        Ok(())
    }

    /// Removes a flow from the flows map, as the controller does when it closes.
    pub fn remove_flow(&mut self, flow: &FlowKey) -> Result<()> {
        self.flows_map()?.remove(flow)?;
        Ok(())
    }

    fn flows_map(&mut self) -> Result<HashMap<&mut MapData, FlowKey, FlowEntry>> {
        Ok(HashMap::try_from(
            self.ebpf.map_mut(FLOWS_MAP).context("flows map missing")?,
        )?)
    }

    fn flow_filter(&mut self) -> Result<&mut FlowFilter> {
        if self.flow_filter.is_none() {
            self.flow_filter = Some(FlowFilter::take(&mut self.ebpf)?);
        }
        Ok(self.flow_filter.as_mut().expect("just set"))
    }

    /// Rebuilds the flows filter from the flows map and the forgotten flows, as the
    /// controller does; returns the slots marked.
    pub fn rebuild_flow_filter(&mut self) -> Result<usize> {
        self.flow_filter()?;
        let flows: HashMap<_, FlowKey, FlowEntry> =
            HashMap::try_from(self.ebpf.map(FLOWS_MAP).context("flows map missing")?)?;
        let forgotten: HashMap<_, FlowKey, ForgottenFlow> = HashMap::try_from(
            self.ebpf
                .map(FORGOTTEN_MAP)
                .context("forgotten flows map missing")?,
        )?;
        let filter = self.flow_filter.as_mut().expect("just taken");
        filter.rebuild(&flows, &forgotten)
    }

    /// Remembers `flow` as forgotten with `seq_offset`, as the controller does when the
    /// flows map evicted it: marked in the filter, then written.
    pub fn remember_forgotten(&mut self, flow: &FlowKey, seq_offset: u32) -> Result<()> {
        self.flow_filter()?.mark(flow);
        let mut forgotten: HashMap<_, FlowKey, ForgottenFlow> = HashMap::try_from(
            self.ebpf
                .map_mut(FORGOTTEN_MAP)
                .context("forgotten flows map missing")?,
        )?;
        let value = ForgottenFlow {
            seq_offset,
            ..ForgottenFlow::default()
        };
        forgotten.insert(flow, value, 0)?;
        Ok(())
    }

    /// Blocks `prefix` as the controller would.
    pub fn block(&mut self, prefix: &ipnet::IpNet) -> Result<()> {
        let mut trie: LpmTrie<_, ProtectedAddress, BlockValue> = LpmTrie::try_from(
            self.ebpf
                .map_mut(BLOCKED_MAP)
                .context("blocked map missing")?,
        )?;
        trie.insert(&maps::lpm_key(prefix), block_origin::OPERATOR, 0)?;
        Ok(())
    }

    /// Puts `prefix` on the allowlist (`bypass`: its SYNs skip the cookie).
    pub fn allow(&mut self, prefix: &ipnet::IpNet, bypass: bool) -> Result<()> {
        let mut trie: LpmTrie<_, ProtectedAddress, AllowValue> = LpmTrie::try_from(
            self.ebpf
                .map_mut(ALLOWED_MAP)
                .context("allowed map missing")?,
        )?;
        trie.insert(&maps::lpm_key(prefix), bypass as AllowValue, 0)?;
        Ok(())
    }

    /// What our SYN-ACKs announce, written as the controller writes it at cookie counter
    /// `now` (after the settings already there).
    pub fn set_syn_ack_settings(&mut self, settings: &SynAckSettings, now: u32) -> Result<()> {
        maps::write_settings(&mut self.ebpf, settings, now)
    }

    /// What the data plane enforces per source on its own (the SYN token bucket).
    pub fn set_policy_settings(&mut self, settings: &PolicySettings) -> Result<()> {
        maps::write_policy_settings(&mut self.ebpf, settings)
    }

    /// The lab flood generator's pace, frames per second (0: unpaced), a fresh schedule.
    pub fn set_flood_rate(&mut self, rate: u64) -> Result<()> {
        crate::lab::set_flood_rate(&mut self.ebpf, rate)
    }

    /// The lab flood generator's template frame.
    pub fn set_flood_template(&mut self, frame: &[u8; LAB_FLOOD_FRAME_LEN]) -> Result<()> {
        let mut map: Array<_, [u8; LAB_FLOOD_FRAME_LEN]> = Array::try_from(
            self.ebpf
                .map_mut(LAB_FLOOD_TEMPLATE_MAP)
                .context("flood template map missing")?,
        )?;
        map.set(0, frame, 0)?;
        Ok(())
    }

    /// Turns auto mode's cookies on or off for the service in `slot`.
    pub fn set_cookies_on(&mut self, slot: u8, service: &ProtectedService, on: bool) -> Result<()> {
        maps::write_cookies_on(&mut self.ebpf, slot, service, DEFAULT_AUTO_SYN_RATE, on)
    }

    /// What the data plane counted of one source and service, summed over CPUs.
    pub fn source_counters(&self, key: &SourceKey) -> Result<SourceCounters> {
        let map: PerCpuHashMap<_, SourceKey, SourceCounters> =
            PerCpuHashMap::try_from(self.ebpf.map(SOURCES_MAP).context("sources map missing")?)?;
        let mut sum = SourceCounters::default();
        if let Some(per_cpu) = found(map.get(key, 0))? {
            per_cpu.iter().for_each(|c| sum.accumulate(c));
        }
        Ok(sum)
    }

    /// When the source last completed a handshake with the service (the vouched map's
    /// monotonic coarse time), if it has.
    pub fn vouched_at(&self, key: &SourceKey) -> Result<Option<u64>> {
        let map: HashMap<_, SourceKey, u64> =
            HashMap::try_from(self.ebpf.map(VOUCHED_MAP).context("vouched map missing")?)?;
        found(map.get(key, 0))
    }

    /// Sets when the source last completed a handshake (to age a vouch).
    pub fn set_vouched_at(&mut self, key: &SourceKey, at_ns: u64) -> Result<()> {
        let mut map: HashMap<_, SourceKey, u64> = HashMap::try_from(
            self.ebpf
                .map_mut(VOUCHED_MAP)
                .context("vouched map missing")?,
        )?;
        map.insert(key, at_ns, 0)?;
        Ok(())
    }

    fn program(&mut self, name: &str) -> Result<&mut Xdp> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing"))?
            .try_into()?;
        if program.fd().is_err() {
            program.load()?;
        }
        Ok(program)
    }

    /// Runs the program loaded first once on `frame`.
    pub fn run(&mut self, frame: &[u8]) -> Result<Outcome> {
        let name = self.program.clone();
        self.run_program(&name, frame)
    }

    /// Runs the named program (loaded on first use; maps shared) once on `frame`.
    pub fn run_program(&mut self, name: &str, frame: &[u8]) -> Result<Outcome> {
        // Room for the frame plus anything a rewrite could add.
        let mut output = vec![0u8; frame.len() + 256];
        let result = self.program(name)?.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut output),
            ..TestRunOptions::new()
        })?;
        output.truncate(result.data_size_out as usize);
        Ok(Outcome {
            xdp_code: result.return_value,
            output,
        })
    }

    /// Runs the program once on `frame` and returns the kernel's time for that run, in ns
    /// (the run alone, not the syscall; BPF_PROG_TEST_RUN's own per-run work included).
    pub fn time_once(&mut self, frame: &[u8]) -> Result<u64> {
        let name = self.program.clone();
        let result = self.program(&name)?.test_run(TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::new()
        })?;
        Ok(result.duration.as_nanos() as u64)
    }

    /// The counters, summed over CPUs.
    pub fn counters(&self) -> Result<CounterBlock> {
        let counters = self
            .counters
            .as_ref()
            .context("the lab object keeps no counters")?;
        Ok(counters::read(counters)?.total)
    }
}

/// A map lookup's value, `None` for a key the map does not hold.
fn found<V>(lookup: Result<V, aya::maps::MapError>) -> Result<Option<V>> {
    match lookup {
        Ok(value) => Ok(Some(value)),
        Err(aya::maps::MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
