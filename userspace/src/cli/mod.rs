//! The `synguard` command line: every verb's arguments (clap), and how each answer prints.
//!
//! Owns the operator's side of every verb. It may not touch the kernel except through
//! `control` (a running controller) and `dataplane::persist` (a guard left running).

mod guard;
mod lists;
mod man;
mod render;
mod top;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, error::ErrorKind};

use crate::control::{
    client::Refused,
    protocol::{Reply, Request},
};
use guard::{GuardArgs, ReadArgs};

#[derive(Parser)]
#[command(
    name = "synguard",
    version,
    about = "SYN-flood defense at the NIC: XDP SYN cookies and a TCP-aware controller"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the guard, attach it to an interface and report counters until SIGINT/SIGTERM.
    Run(Box<crate::config::run_args::RunArgs>),
    /// Check a configuration as `run` would (the file, the flags, the interfaces, the key
    /// and list files) and print the effective settings; touches nothing in the kernel.
    /// Exits 0 when `run` would start with it, 1 otherwise (like `nginx -t`).
    Check(Box<crate::config::run_args::RunArgs>),
    /// List the validated flows of a running guard: 4-tuple, state, age, traffic each way.
    Flows(ReadArgs),
    /// The running guard's flow state histogram (as `ss -s` shows one), its services and the
    /// sources with most half-open connections.
    Status(ReadArgs),
    /// Change settings of the running guard at once: KEY=VALUE, keys as the long flags of
    /// `synguard run` (`synguard get` lists them and which can change live).
    Set(SetArgs),
    /// The running guard's effective settings, and where each came from (default, file,
    /// flag, set).
    Get(GetArgs),
    /// The running guard's counters: every one's total and rate.
    Stats(ReadArgs),
    /// A live view of the running guard: SYN/s, cookies, drops by reason, flows by state, top
    /// sources by half-open count, blocks (plain lines when stdout is not a terminal).
    Top(top::TopArgs),
    /// Protect services on the running guard at once, or stop protecting them.
    Protect(lists::ProtectArgs),
    /// Block source prefixes on the running guard (dropped in XDP at once).
    Block(lists::BlockArgs),
    /// Allow source prefixes on the running guard (never blocked; optionally never challenged).
    Allow(lists::AllowArgs),
    /// Cookie keys of the running guard.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
        #[command(flatten)]
        guard: GuardArgs,
    },
    /// Detach the guard from an interface and remove its pinned maps and state (a running
    /// controller detaches and exits; a guard left running by a stopped one is removed).
    Detach(GuardArgs),
    /// Print a shell completion script (e.g. `synguard completions bash >
    /// /etc/bash_completion.d/synguard`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff; e.g. `synguard man > /usr/local/share/man/man8/synguard.8`).
    Man,
}

#[derive(Subcommand)]
enum KeysAction {
    /// Rotate now: a new key for new cookies, the current one still accepted for one period
    /// (rotate every guard of an ECMP group together, or they stop sharing cookies).
    Rotate,
}

#[derive(clap::Args)]
struct SetArgs {
    /// KEY=VALUE, e.g. max-syn-rate=500 (all are checked first: one bad value changes nothing).
    #[arg(value_name = "KEY=VALUE", required = true, value_parser = parse_setting)]
    settings: Vec<(String, String)>,
    #[command(flatten)]
    read: ReadArgs,
}

#[derive(clap::Args)]
struct GetArgs {
    /// Only this key.
    #[arg(value_name = "KEY")]
    key: Option<String>,
    #[command(flatten)]
    read: ReadArgs,
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(key, value)| (key.trim_start_matches("--").to_string(), value.to_string()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE (e.g. max-syn-rate=500)"))
}

/// `synguard detach`: a running controller detaches and exits; a guard left running by a
/// stopped one is removed from its pins.
fn detach(args: GuardArgs) -> anyhow::Result<()> {
    use crate::control::{client, socket};
    if let Some(stream) = client::connect(args.iface.as_deref())? {
        client::exchange(stream, &Request::Detach)?;
        // The controller removes its socket last, once detached.
        let iface = args.iface()?;
        let socket = socket::socket_path(&iface);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while socket.exists() {
            if std::time::Instant::now() > deadline {
                anyhow::bail!("the controller on {iface} did not detach within 10 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        println!("detached from {iface}");
        return Ok(());
    }
    let iface = args.iface()?;
    let pins = crate::dataplane::persist::Pins::of(&iface, &args.bpffs);
    if !pins.dir.exists() {
        anyhow::bail!("no synguard is attached to {iface} in this network namespace");
    }
    pins.remove()?;
    println!("detached from {iface} (no controller was running)");
    Ok(())
}

/// `synguard check`: the settings phase of `run` alone, then the effective settings.
fn check(cli: Vec<std::ffi::OsString>) -> anyhow::Result<()> {
    let (args, config) = crate::config::file::Config::load(cli)?;
    crate::daemon::run::check(&args)?;
    let settings = crate::control::protocol::Settings {
        config: config.path.clone(),
        settings: config.effective.clone(),
        live: crate::config::run_args::live_keys(),
    };
    print!("{}", render::settings(&settings, None));
    println!("synguard: the configuration is valid");
    Ok(())
}

/// Prints `reply` as JSON (`--json`: the reply as it came, tagged) or as text.
fn print(
    reply: &Reply,
    json: bool,
    text: impl FnOnce(&Reply) -> anyhow::Result<String>,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(reply)?);
    } else {
        print!("{}", text(reply)?);
    }
    Ok(())
}

fn get(args: GetArgs) -> anyhow::Result<()> {
    let Reply::Settings(settings) = args.read.guard.ask(Request::Get)? else {
        anyhow::bail!("the controller answered `get` with something else");
    };
    if let Some(key) = &args.key
        && !settings.settings.contains_key(key)
    {
        anyhow::bail!("no setting {key:?}: `synguard get` lists them");
    }
    if args.read.json {
        let shown: std::collections::BTreeMap<_, _> = settings
            .settings
            .iter()
            .filter(|(key, _)| args.key.as_ref().is_none_or(|k| k == *key))
            .collect();
        println!("{}", serde_json::to_string(&shown)?);
        return Ok(());
    }
    print!("{}", render::settings(&settings, args.key.as_deref()));
    Ok(())
}

/// `synguard --version`: the version, the map layout (which builds can upgrade each other in
/// place) and the build id of the embedded eBPF object.
fn version() -> String {
    format!(
        "{} (map layout {}, build {})",
        env!("CARGO_PKG_VERSION"),
        synguard_common::maps::MAP_LAYOUT_VERSION,
        crate::dataplane::persist::build_id(crate::dataplane::object::EBPF_OBJECT)
    )
}

pub fn main() -> ExitCode {
    let parsed = Cli::command()
        .version(version())
        .try_get_matches()
        .and_then(|matches| <Cli as clap::FromArgMatches>::from_arg_matches(&matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(error) => return bad_arguments(error),
    };
    let result = match cli.command {
        // Parsed again with the configuration file under the flags.
        Command::Run(_) => crate::daemon::run::run(std::env::args_os().skip(2).collect()),
        Command::Check(_) => check(std::env::args_os().skip(2).collect()),
        Command::Flows(args) => args
            .guard
            .ask(Request::Flows)
            .and_then(|reply| print(&reply, args.json, render::flows)),
        Command::Status(args) => args
            .guard
            .ask(Request::Status)
            .and_then(|reply| print(&reply, args.json, render::status)),
        Command::Stats(args) => args
            .guard
            .ask(Request::Stats)
            .and_then(|reply| print(&reply, args.json, render::stats)),
        Command::Detach(args) => detach(args),
        Command::Keys {
            action: KeysAction::Rotate,
            guard,
        } => guard
            .ask(Request::KeysRotate)
            .and_then(|reply| match reply {
                Reply::KeysRotated { epoch } => {
                    println!("cookie keys rotated (epoch {epoch})");
                    Ok(())
                }
                other => anyhow::bail!("the controller answered a rotation with {other:?}"),
            }),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "synguard",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man => man::render(&Cli::command(), &mut std::io::stdout()),
        Command::Top(args) => top::top(args),
        Command::Set(args) => args
            .read
            .guard
            .ask(Request::Set {
                settings: args.settings,
            })
            .and_then(|reply| print(&reply, args.read.json, render::changes)),
        Command::Get(args) => get(args),
        Command::Protect(args) => lists::protect(args),
        Command::Block(args) => lists::block(args),
        Command::Allow(args) => lists::allow(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line: the outermost context, then its causes (an error, for journald).
            let priority = if crate::daemon::journal::to_journal() {
                "<3>"
            } else {
                ""
            };
            eprintln!("{priority}synguard: {error:#}");
            match error.downcast_ref::<Refused>() {
                Some(refused) => ExitCode::from(refused.exit_code),
                None => ExitCode::FAILURE,
            }
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
    eprintln!(
        "synguard: {} (see `synguard --help`)",
        crate::config::file::one_line(&error)
    );
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_and_the_man_page_come_from_the_same_definitions() {
        let mut bash = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut Cli::command(),
            "synguard",
            &mut bash,
        );
        let bash = String::from_utf8(bash).unwrap();
        for word in [
            "run",
            "status",
            "block",
            "allow",
            "set",
            "get",
            "--max-syn-rate",
        ] {
            assert!(bash.contains(word), "bash completion lacks {word}");
        }
        let mut page = Vec::new();
        man::render(&Cli::command(), &mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(page.contains(".TH synguard 8"), "{}", &page[..200]);
        assert_eq!(page.matches(".TH ").count(), 1, "one page");
        for section in [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "COMMANDS",
            "OPTIONS",
            "FILES",
            "SIGNALS",
            "\"EXIT STATUS\"",
            "EXAMPLES",
            "\"SEE ALSO\"",
        ] {
            assert!(
                page.contains(&format!(".SH {section}")),
                "{section} missing"
            );
        }
        assert!(page.contains("synguard check"), "every command is listed");
        assert!(page.contains("max\\-syn\\-rate"), "run's options");
        assert!(
            !page.contains("synguard\\-"),
            "no page points to a page that does not exist"
        );
        for text in [&bash, &page] {
            assert!(!text.contains("lab"), "no lab verb in the product's CLI");
        }
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
