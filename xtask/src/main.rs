//! `cargo xtask`: bootstrap, build, lab, test, demo, bench, flood.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use xtask::{
    bench, bootstrap,
    build::{self, Profile},
    demo,
    flood::{self, plan},
    fuzz,
    lab::{self, Lab},
    lab_server, package, test,
};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "synguard's build, lab and test tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (toolchains, bpf-linker, Debian packages).
    Bootstrap,
    /// Build synguard (release) with its XDP object.
    Build,
    /// Manage lab namespaces: client -- guard -- server.
    Lab {
        #[command(subcommand)]
        action: LabAction,
    },
    /// Lint, then run the host, data-plane and lab test tiers.
    Test {
        /// Run only these tiers (repeatable); all of them by default.
        #[arg(long, value_enum)]
        tier: Vec<test::Tier>,
    },
    /// Bootstrap, build, lab up, attach, show traffic passing and counters, lab down.
    Demo,
    /// Build the Debian package (cargo-deb): binary, unit, configuration, man page,
    /// completions; written under target/package/.
    Package,
    /// Run benchmarks (all by default) and write their results under results/.
    Bench {
        #[arg(value_enum)]
        which: Vec<bench::Bench>,
    },
    /// Floods against real clients in the lab, defense after defense; reports under
    /// results/flood/.
    Flood(FloodArgs),
    /// Fuzz the code both sides share (cargo-fuzz, libFuzzer): every target in turn; results
    /// in results/fuzz.json.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        seconds: u64,
        /// A target to run (repeatable; all by default): parse_frame, tcp_options, cookie,
        /// translate.
        #[arg(long)]
        target: Vec<String>,
    },
    /// Lab plumbing: the fast flood generator run inside the client namespace.
    #[command(hide = true)]
    LabPacketFlood {
        #[arg(long)]
        iface: String,
        #[arg(long)]
        guard_mac: String,
        #[arg(long, value_enum)]
        scenario: plan::Scenario,
        #[arg(long)]
        seconds: u32,
        #[arg(long, default_value_t = 0)]
        rate: u64,
    },
    /// Lab plumbing: the HTTP server run inside the server namespace.
    #[command(hide = true)]
    LabHttpServer {
        /// An address to serve on (repeatable: the lab serves IPv4 and IPv6).
        #[arg(long, required = true)]
        listen: Vec<String>,
    },
}

#[derive(clap::Args)]
struct FloodArgs {
    /// Scenarios to run (comma-separated or repeated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "random-syn")]
    scenario: Vec<plan::Scenario>,
    /// Every scenario.
    #[arg(long, conflicts_with = "scenario")]
    all_scenarios: bool,
    /// Length of each flood, seconds.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=300))]
    seconds: u32,
    /// Defenses to compare, in this order (all by default).
    #[arg(long, value_enum, value_delimiter = ',')]
    defense: Vec<plan::Defense>,
    /// Flood generators (all of them by default).
    #[arg(long, value_enum, value_delimiter = ',')]
    generator: Vec<plan::Generator>,
    /// The packet-socket and live-frames generators' rate, frames per second (0: as fast as
    /// they go). hping3 always floods as fast as it can.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=100_000_000))]
    attack_rate: u64,
    /// Legitimate connections per second during the whole run.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=5000))]
    legit_rate: u32,
    /// Run the legitimate client with TCP timestamps off (options only in the cookie).
    #[arg(long)]
    no_timestamps: bool,
    /// Measure every defense this many times, interleaved; the report adds the medians.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    repeats: u32,
    /// Record where the guard's CPU goes during each flood (`perf record` on it), by kind of
    /// work and costliest symbols, in the report.
    #[arg(long)]
    profile: bool,
    /// An argument for `synguard run` in the synguard defenses (repeatable), to compare
    /// settings under the same flood: `--guard-arg=--early-data=0`.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    guard_arg: Vec<String>,
}

impl FloodArgs {
    fn options(self) -> plan::Options {
        fn or_all<T: Clone>(chosen: Vec<T>, all: &[T]) -> Vec<T> {
            if chosen.is_empty() {
                all.to_vec()
            } else {
                chosen
            }
        }
        plan::Options {
            scenarios: if self.all_scenarios {
                plan::Scenario::ALL.to_vec()
            } else {
                self.scenario
            },
            defenses: or_all(self.defense, &plan::Defense::ALL),
            generators: or_all(self.generator, &plan::Generator::ALL),
            seconds: self.seconds,
            attack_rate: self.attack_rate,
            legit_rate: self.legit_rate,
            client_timestamps: !self.no_timestamps,
            repeats: self.repeats,
            profile: self.profile,
            guard_args: self.guard_arg,
        }
    }
}

#[derive(Subcommand)]
enum LabAction {
    /// Build a lab and leave it running.
    Up {
        /// Suffix of the namespace names (random by default).
        #[arg(long)]
        name: Option<String>,
    },
    /// Remove every lab on this machine (also what a crashed run left).
    Down,
    /// List labs, their namespaces, interfaces and XDP attachments.
    Status,
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> Result<()> {
    let xtask = std::env::current_exe().context("locating the xtask binary")?;
    match task {
        Task::Bootstrap => bootstrap::ensure(),
        Task::Build => {
            bootstrap::ensure()?;
            let binary = build::synguard(Profile::Release)?;
            println!("built {}", binary.display());
            Ok(())
        }
        Task::Lab { action } => lab_command(action, &xtask),
        Task::Test { tier } => test::run(&tier),
        Task::Demo => demo::run(&xtask),
        Task::Package => {
            package::build(Profile::Release).map(|deb| println!("package: {}", deb.display()))
        }
        Task::Bench { which } => bench::run(&which, &xtask),
        Task::Flood(args) => {
            bootstrap::ensure()?;
            flood::run::run(&xtask, &args.options()).map(drop)
        }
        Task::Fuzz { seconds, target } => fuzz::run(&target, seconds),
        Task::LabHttpServer { listen } => lab_server::serve(&listen),
        Task::LabPacketFlood {
            iface,
            guard_mac,
            scenario,
            seconds,
            rate,
        } => {
            let sent = flood::packet_socket::run(&iface, &guard_mac, scenario, seconds, rate)?;
            println!("sent {sent} frames");
            Ok(())
        }
    }
}

fn lab_command(action: LabAction, xtask: &std::path::Path) -> Result<()> {
    bootstrap::require_root()?;
    match action {
        LabAction::Up { name } => {
            bootstrap::ensure()?;
            let synguard = build::synguard(Profile::Release)?;
            let suffix = name.unwrap_or_else(lab::unique_suffix);
            let lab = Lab::up(&suffix, &synguard, &lab::server_command(xtask))?;
            print!("{}", lab.status()?);
            println!(
                "attach the guard: ip netns exec {} {} run --iface {}",
                lab.netns(lab::Host::Guard),
                synguard.display(),
                lab::GUARD_CLIENT_IFACE
            );
            println!(
                "send requests:    ip netns exec {} curl http://{}/",
                lab.netns(lab::Host::Client),
                lab::SERVER_ADDR
            );
            Ok(())
        }
        LabAction::Down => {
            for lab in lab::all()? {
                lab.down()?;
                println!("removed {}", lab.name);
            }
            Ok(())
        }
        LabAction::Status => {
            let labs = lab::all()?;
            if labs.is_empty() {
                println!("no lab is up");
            }
            for lab in labs {
                print!("{}", lab.status()?);
            }
            Ok(())
        }
    }
}
