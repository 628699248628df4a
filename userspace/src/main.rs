//! The `synguard` command line.

mod lab_peer;
mod lists;
mod policy_args;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand, error::ErrorKind};

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
    Run(Box<run::RunArgs>),
    /// List the validated flows of a running guard: 4-tuple, state, age, traffic each way.
    Flows(QueryArgs),
    /// The running guard's flow state histogram (as `ss -s` shows one), its services and the
    /// sources with most half-open connections.
    Status(QueryArgs),
    /// Block source prefixes on the running guard (dropped in XDP at once).
    Block(lists::ListArgs),
    /// Allow source prefixes on the running guard (never blocked; optionally never challenged).
    Allow(lists::ListArgs),
    /// Lab plumbing: pin a pass program on a peer veth (see `cargo xtask lab`).
    #[command(hide = true)]
    LabPeerPass(lab_peer::LabPeerArgs),
}

#[derive(clap::Args)]
struct QueryArgs {
    /// The guard's client-side interface (needed only when several guards run).
    #[arg(long, short = 'i', value_name = "IFACE")]
    iface: Option<String>,
    /// Print the controller's JSON answer as it is.
    #[arg(long)]
    json: bool,
}

fn query(
    args: QueryArgs,
    request: &str,
    text: fn(&serde_json::Value) -> String,
) -> anyhow::Result<()> {
    let answer = synguard::control::ask(
        args.iface.as_deref(),
        &serde_json::json!({ "request": request }),
    )?;
    if args.json {
        println!("{answer}");
    } else {
        println!("{}", text(&answer));
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return bad_arguments(error),
    };
    let result = match cli.command {
        Command::Run(args) => run::run(*args),
        Command::Flows(args) => query(args, "flows", synguard::flow_control::flows_text),
        Command::Status(args) => query(args, "status", synguard::flow_control::status_text),
        Command::Block(args) => lists::run(args, lists::List::Block),
        Command::Allow(args) => lists::run(args, lists::List::Allow),
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

/// Help and version print as clap renders them; argument errors become one line that says
/// what is wrong and where to look, with a non-zero exit.
fn bad_arguments(error: clap::Error) -> ExitCode {
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        let _ = error.print();
        return ExitCode::SUCCESS;
    }
    if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = error.print();
        return ExitCode::from(2);
    }
    // clap's message runs over a few lines before its usage and tip sections: join them.
    let rendered = error.to_string();
    let message: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|line| !line.is_empty() && !line.starts_with("Usage:"))
        .collect();
    eprintln!(
        "synguard: {} (see `synguard --help`)",
        message.join(" ").trim_start_matches("error: ")
    );
    ExitCode::from(2)
}
