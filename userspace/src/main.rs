//! The `synguard` command line.

mod lab_peer;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "synguard",
    version,
    about = "SYN-flood defense at the NIC: XDP SYN cookies and a TCP-aware controller"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the guard, attach it to an interface and report counters until SIGINT/SIGTERM.
    Run(run::RunArgs),
    /// Lab plumbing: pin a pass program on a peer veth (see `cargo xtask lab`).
    #[command(hide = true)]
    LabPeerPass(lab_peer::LabPeerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::LabPeerPass(args) => lab_peer::lab_peer_pass(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line: the outermost context, then its causes.
            eprintln!("synguard: {error:#}");
            ExitCode::FAILURE
        }
    }
}
