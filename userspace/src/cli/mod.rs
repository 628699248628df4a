//! The `synguard` command line: every verb's arguments (clap), and how each answer prints.
//!
//! Owns the operator's side of every verb. It may not touch the kernel except through
//! `control` (a running controller) and `dataplane::persist` (a guard left running).

mod lists;
mod top;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, error::ErrorKind};

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
    /// List the validated flows of a running guard: 4-tuple, state, age, traffic each way.
    Flows(QueryArgs),
    /// The running guard's flow state histogram (as `ss -s` shows one), its services and the
    /// sources with most half-open connections.
    Status(QueryArgs),
    /// Change settings of the running guard at once: KEY=VALUE, keys as the long flags of
    /// `synguard run` (`synguard get` lists them and which can change live).
    Set(SetArgs),
    /// The running guard's effective settings, and where each came from (default, file,
    /// flag, set).
    Get(GetArgs),
    /// The running guard's counters: every one's total and rate.
    Stats(QueryArgs),
    /// A live view of the running guard: SYN/s, cookies, drops by reason, flows by state, top
    /// sources by half-open count, blocks (plain lines when stdout is not a terminal).
    Top(top::TopArgs),
    /// Protect services on the running guard at once, or stop protecting them.
    Protect(lists::ProtectArgs),
    /// Block source prefixes on the running guard (dropped in XDP at once).
    Block(lists::ListArgs),
    /// Allow source prefixes on the running guard (never blocked; optionally never challenged).
    Allow(lists::ListArgs),
    /// Cookie keys of the running guard.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
        /// The guard's client-side interface (needed only when several guards run).
        #[arg(long, short = 'i', value_name = "IFACE", global = true)]
        iface: Option<String>,
    },
    /// Detach the guard from an interface and remove its pinned maps and state (a running
    /// controller detaches and exits; a guard left running by a stopped one is removed).
    Detach(DetachArgs),
    /// Print a shell completion script (e.g. `synguard completions bash >
    /// /etc/bash_completion.d/synguard`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff; e.g. `synguard man > /usr/local/share/man/man8/synguard.8`).
    Man,
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

#[derive(Subcommand)]
enum KeysAction {
    /// Rotate now: a new key for new cookies, the current one still accepted for one period
    /// (rotate every guard of an ECMP group together, or they stop sharing cookies).
    Rotate,
}

#[derive(clap::Args)]
struct DetachArgs {
    /// The guard's client-side interface (needed only when several guards are attached).
    #[arg(long, short = 'i', value_name = "IFACE")]
    iface: Option<String>,
    /// Where bpffs is, as `synguard run --bpffs` had it.
    #[arg(long, value_name = "PATH", env = "SYNGUARD_BPFFS", default_value = crate::dataplane::persist::BPFFS)]
    bpffs: std::path::PathBuf,
}

fn detach(args: DetachArgs) -> anyhow::Result<()> {
    let iface = match &args.iface {
        Some(iface) => iface.clone(),
        None => crate::dataplane::persist::attached_iface(&args.bpffs)?,
    };
    let socket = crate::control::socket::socket_path(&iface);
    if socket.exists() {
        crate::control::socket::ask(Some(&iface), &serde_json::json!({ "request": "detach" }))?;
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
    let pins = crate::dataplane::persist::Pins::of(&iface, &args.bpffs);
    if !pins.dir.exists() {
        anyhow::bail!("no synguard is attached to {iface} in this network namespace");
    }
    pins.remove()?;
    println!("detached from {iface} (no controller was running)");
    Ok(())
}

#[derive(clap::Args)]
struct SetArgs {
    /// KEY=VALUE, e.g. max-syn-rate=500 (all are checked first: one bad value changes nothing).
    #[arg(value_name = "KEY=VALUE", required = true, value_parser = parse_setting)]
    settings: Vec<(String, String)>,
    #[command(flatten)]
    query: QueryArgs,
}

#[derive(clap::Args)]
struct GetArgs {
    /// Only this key.
    #[arg(value_name = "KEY")]
    key: Option<String>,
    #[command(flatten)]
    query: QueryArgs,
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(key, value)| (key.trim_start_matches("--").to_string(), value.to_string()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE (e.g. max-syn-rate=500)"))
}

fn set(args: SetArgs) -> anyhow::Result<()> {
    let answer = crate::control::socket::ask(
        args.query.iface.as_deref(),
        &serde_json::json!({ "request": "set", "settings": args.settings }),
    )?;
    if args.query.json {
        println!("{answer}");
        return Ok(());
    }
    let changed = answer["changed"].as_array().cloned().unwrap_or_default();
    if changed.is_empty() {
        println!("nothing changed (the values were already in force)");
    }
    for change in changed {
        let join = |v: &serde_json::Value| {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        println!(
            "{}: {} -> {}",
            change["key"].as_str().unwrap_or(""),
            join(&change["old"]),
            join(&change["new"])
        );
    }
    Ok(())
}

fn get(args: GetArgs) -> anyhow::Result<()> {
    let answer = crate::control::socket::ask(
        args.query.iface.as_deref(),
        &serde_json::json!({ "request": "get" }),
    )?;
    let settings = answer["settings"].as_object().cloned().unwrap_or_default();
    if let Some(key) = &args.key
        && !settings.contains_key(key)
    {
        anyhow::bail!("no setting {key:?}: `synguard get` lists them");
    }
    let live: Vec<&str> = answer["live"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k.as_str())
        .collect();
    let shown: Vec<(&String, &serde_json::Value)> = settings
        .iter()
        .filter(|(key, _)| args.key.as_ref().is_none_or(|k| k == *key))
        .collect();
    if args.query.json {
        let object: serde_json::Map<String, serde_json::Value> = shown
            .iter()
            .map(|(k, v)| ((*k).clone(), (*v).clone()))
            .collect();
        println!("{}", serde_json::Value::Object(object));
        return Ok(());
    }
    if args.key.is_none() {
        println!(
            "configuration file: {}",
            answer["config"].as_str().unwrap_or("(none)")
        );
        println!("{:<24} {:<32} {:<8} LIVE", "KEY", "VALUE", "SOURCE");
    }
    for (key, setting) in shown {
        let value = setting["value"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(",");
        if args.key.is_some() {
            println!("{value}");
        } else {
            println!(
                "{key:<24} {value:<32} {:<8} {}",
                setting["source"].as_str().unwrap_or(""),
                if live.contains(&key.as_str()) {
                    "yes"
                } else {
                    "restart"
                }
            );
        }
    }
    Ok(())
}

/// The man page: one page for the command and, as sections, each subcommand.
fn man(out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let command = Cli::command();
    clap_mangen::Man::new(command.clone())
        .section("8")
        .render(out)?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("synguard-{}", sub.get_name());
        clap_mangen::Man::new(sub.clone().name(name))
            .section("8")
            .render(out)?;
    }
    Ok(())
}

/// `synguard stats` as a table: the counters that moved, their totals and rates.
fn stats_text(stats: &serde_json::Value) -> String {
    let mut text = format!("{:<36} {:>16} {:>14}\n", "counter", "total", "per second");
    for counter in synguard_common::counters::Counter::ALL {
        let name = counter.name();
        let total = stats["total"][name].as_u64().unwrap_or(0);
        if total == 0 {
            continue;
        }
        text.push_str(&format!(
            "{name:<36} {total:>16} {:>14.1}\n",
            stats["per_second"][name].as_f64().unwrap_or(0.0)
        ));
    }
    text
}

fn query(
    args: QueryArgs,
    request: &str,
    text: fn(&serde_json::Value) -> String,
) -> anyhow::Result<()> {
    let answer = crate::control::socket::ask(
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

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return bad_arguments(error),
    };
    let result = match cli.command {
        // Parsed again with the configuration file under the flags.
        Command::Run(_) => crate::daemon::run::run(std::env::args_os().skip(2).collect()),
        Command::Flows(args) => query(args, "flows", crate::flows::control::flows_text),
        Command::Status(args) => query(args, "status", crate::flows::control::status_text),
        Command::Detach(args) => detach(args),
        Command::Keys {
            action: KeysAction::Rotate,
            iface,
        } => crate::control::socket::ask(
            iface.as_deref(),
            &serde_json::json!({ "request": "keys_rotate" }),
        )
        .map(|answer| println!("cookie keys rotated (epoch {})", answer["epoch"])),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "synguard",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man => man(&mut std::io::stdout()),
        Command::Stats(args) => query(args, "stats", stats_text),
        Command::Top(args) => top::top(args),
        Command::Set(args) => set(args),
        Command::Get(args) => get(args),
        Command::Protect(args) => lists::protect(args),
        Command::Block(args) => lists::run(args, lists::List::Block),
        Command::Allow(args) => lists::run(args, lists::List::Allow),
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
        man(&mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(page.contains(".TH synguard 8"), "{}", &page[..200]);
        assert!(page.contains("synguard\\-run"), "a section per subcommand");
        assert!(page.contains("max\\-syn\\-rate"));
        for text in [&bash, &page] {
            assert!(!text.contains("lab"), "no lab verb in the product's CLI");
        }
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
