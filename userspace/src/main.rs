//! The `synguard` command line.

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
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
