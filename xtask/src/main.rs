//! `cargo xtask`: bootstrap, build, lab, test, demo.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use xtask::{
    bench, bootstrap,
    build::{self, Profile},
    demo,
    lab::{self, Lab},
    lab_server, test,
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
    /// Run benchmarks (all by default) and write their results under results/.
    Bench {
        #[arg(value_enum)]
        which: Vec<bench::Bench>,
    },
    /// Lab plumbing: the HTTP server run inside the server namespace.
    #[command(hide = true)]
    LabHttpServer {
        #[arg(long)]
        listen: String,
    },
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
        Task::Bench { which } => bench::run(&which, &xtask),
        Task::LabHttpServer { listen } => lab_server::serve(&listen),
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
