//! What a flood run is made of: scenarios, defenses, generators, the options of
//! `cargo xtask flood`, and one case (scenario x generator x defense).

/// The fixed-source scenario's spoofed source: inside the lab, never the real client.
pub const FIXED_SOURCE: [u8; 4] = [198, 18, 1, 99];
/// The legitimate client's /24, for the scenario that spoofs sources inside it.
pub const CLIENT_PREFIX: [u8; 3] = [198, 18, 1];

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// SYNs from random sources (`hping3 -S --flood --rand-source`).
    RandomSyn,
    /// SYNs from one spoofed source.
    FixedSyn,
    /// Bare ACKs from random sources with random sequence and acknowledgment numbers.
    Ack,
    /// RSTs from random sources.
    Rst,
    /// FINs (with ACK, as stacks send them) from random sources.
    Fin,
    /// SYNs from random sources inside the legitimate client's own /24 (its address too).
    ClientPrefixSyn,
    /// SYN, ACK, RST and FIN floods at once, random sources.
    Mixed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Defense {
    /// Nothing: the guard routes, the server runs with tcp_syncookies=0.
    None,
    /// The server kernel's SYN cookies when its SYN queue overflows (tcp_syncookies=1).
    Syncookies,
    /// The server kernel's SYN cookies for every SYN (tcp_syncookies=2).
    SyncookiesAlways,
    /// netfilter SYNPROXY on the guard (nft synproxy); the server as Linux ships it
    /// (tcp_syncookies=1).
    Synproxy,
    /// synguard, the service in `always` mode; the server as Linux ships it.
    SynguardAlways,
    /// synguard, the service in `auto` mode; the server as Linux ships it.
    SynguardAuto,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Generator {
    /// hping3, one process per attack leg (the headline tool; about 150-200k packets/s here).
    Hping3,
    /// Ours (`packet_flood`): crafted frames, 64 per sendmmsg on an AF_PACKET socket; several
    /// times hping3's rate, spoofed sources inside the lab's range.
    PacketSocket,
    /// Ours (`synguard lab-flood-frames`): BPF_PROG_TEST_RUN in live-frames mode redirects
    /// randomized copies of template frames into the client's link; the guard receives
    /// page-pool frames, as from a NIC, not socket buffers veth must copy. Millions of
    /// frames/s, in bursts; `--attack-rate` spreads them out (at most 64 back to back).
    LiveFrames,
}

impl Scenario {
    pub const ALL: [Scenario; 7] = [
        Scenario::RandomSyn,
        Scenario::FixedSyn,
        Scenario::Ack,
        Scenario::Rst,
        Scenario::Fin,
        Scenario::ClientPrefixSyn,
        Scenario::Mixed,
    ];

    /// The hping3 processes of this scenario, as their flag lists (the target port and
    /// address are added); `None` when hping3 cannot produce it.
    pub fn hping3_legs(self) -> Option<Vec<Vec<String>>> {
        let random = |flags: &str| vec![flags.to_string(), "--rand-source".to_string()];
        Some(match self {
            Scenario::RandomSyn => vec![random("-S")],
            Scenario::FixedSyn => vec![vec![
                "-S".into(),
                "-a".into(),
                std::net::Ipv4Addr::from(FIXED_SOURCE).to_string(),
            ]],
            Scenario::Ack => vec![random("-A")],
            Scenario::Rst => vec![random("-R")],
            Scenario::Fin => vec![random("-FA")],
            // hping3 spoofs one fixed address or random ones anywhere, never inside a prefix.
            Scenario::ClientPrefixSyn => return None,
            Scenario::Mixed => vec![random("-S"), random("-A")],
        })
    }

    pub fn name(self) -> String {
        cli_name(self)
    }
}

impl Defense {
    pub const ALL: [Defense; 6] = [
        Defense::None,
        Defense::Syncookies,
        Defense::SyncookiesAlways,
        Defense::Synproxy,
        Defense::SynguardAlways,
        Defense::SynguardAuto,
    ];

    pub fn name(self) -> String {
        cli_name(self)
    }

    /// The server's tcp_syncookies: off for `none`, the kernel's default (1) behind a guard.
    pub fn server_syncookies(self) -> &'static str {
        match self {
            Defense::None => "0",
            Defense::SyncookiesAlways => "2",
            _ => "1",
        }
    }

    pub fn is_synguard(self) -> bool {
        matches!(self, Defense::SynguardAlways | Defense::SynguardAuto)
    }
}

impl Generator {
    pub const ALL: [Generator; 3] = [
        Generator::Hping3,
        Generator::PacketSocket,
        Generator::LiveFrames,
    ];

    pub fn name(self) -> String {
        cli_name(self)
    }
}

/// A value's name on the command line (`random-syn`, `synguard-always`...).
fn cli_name(value: impl clap::ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|value| value.get_name().to_string())
        .unwrap_or_default()
}

/// What `cargo xtask flood` was asked for.
#[derive(Clone, Debug)]
pub struct Options {
    pub scenarios: Vec<Scenario>,
    pub defenses: Vec<Defense>,
    pub generators: Vec<Generator>,
    pub seconds: u32,
    /// The packet-socket and live-frames generators' frames per second; 0: as fast as they can.
    pub attack_rate: u64,
    /// Legitimate connections per second.
    pub legit_rate: u32,
    /// TCP timestamps on the legitimate client (off: options ride only in the cookie).
    pub client_timestamps: bool,
    /// Rounds over every generator and defense (interleaved, so drift hits them alike).
    pub repeats: u32,
    /// Sample the guard's CPU during each flood (see `guard_profile`).
    pub profile: bool,
    /// Extra arguments for `synguard run`.
    pub guard_args: Vec<String>,
}

/// One comparison: a scenario, the generator that floods, the defense that faces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Case {
    pub scenario: Scenario,
    pub generator: Generator,
    pub defense: Defense,
}

impl Case {
    pub fn name(&self) -> String {
        format!(
            "{} with {} against {}",
            self.scenario.name(),
            self.generator.name(),
            self.defense.name()
        )
    }
}
