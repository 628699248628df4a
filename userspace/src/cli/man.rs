//! synguard(8): one page, built from the clap definitions (synopsis, commands, `run`'s
//! options) and the sections clap has no words for (files, signals, exit status, examples).

use std::io::Write;

use anyhow::Result;
use clap::Command;

/// Escapes text for roff: backslashes, hyphens (a plain `-` may print as a hyphen, not a
/// minus), and a leading dot or quote (a request).
fn escape(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// A tagged paragraph: `tag` in bold, then `body`.
fn item(out: &mut dyn Write, tag: &str, body: &str) -> Result<()> {
    writeln!(out, ".TP\n\\fB{}\\fR\n{}", escape(tag), escape(body))?;
    Ok(())
}

pub fn render(cli: &Command, out: &mut dyn Write) -> Result<()> {
    let page = clap_mangen::Man::new(cli.clone())
        .section("8")
        .manual("System Manager's Manual");
    page.render_title(out)?;
    page.render_name_section(out)?;
    page.render_synopsis_section(out)?;
    writeln!(
        out,
        ".SH DESCRIPTION\n{}",
        escape(
            "synguard defends TCP services against SYN floods at the NIC. An XDP program \
             answers SYNs to protected services with SYN cookies and keeps no state until a \
             client answers; a validated client's connection is opened to the server with the \
             client's own options and forwarded both ways, its sequence numbers, timestamps \
             and windows translated. The controller (synguard run) holds the TCP state of \
             every validated flow, blocks sources that break the per-source limits, and \
             exports its decisions. The programs keep guarding when the controller stops."
        )
    )?;
    writeln!(out, ".SH COMMANDS")?;
    for sub in cli.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        let about = sub
            .get_about()
            .map(|about| about.to_string())
            .unwrap_or_default();
        item(out, &format!("synguard {}", sub.get_name()), &about)?;
    }
    // `run`'s flags are the daemon's settings (the keys of the configuration file too).
    if let Some(run) = cli.find_subcommand("run") {
        clap_mangen::Man::new(run.clone()).render_options_section(out)?;
    }
    writeln!(out, ".SH FILES")?;
    for (path, what) in [
        (
            "/etc/synguard/synguard.toml",
            "The configuration: one key per long flag of synguard run (flags win over it). \
             Read at start and on SIGHUP; synguard check checks it.",
        ),
        (
            "/run/synguard/net<netns>-<iface>.sock",
            "The control socket of the controller guarding <iface> in the network namespace \
             with inode <netns>; root's alone.",
        ),
        (
            "/sys/fs/bpf/synguard/net<netns>-<iface>/",
            "The pinned maps and links: the programs keep guarding while no controller runs, \
             and the next one adopts them with every flow, block and key.",
        ),
        (
            "/run/synguard/net<netns>-<iface>.d/",
            "The guard's state: the cookie secret (when no key file gives it), manual key \
             rotations, the block and allow lists, the build that started it.",
        ),
        (
            "/var/log/synguard/",
            "Where the packaged configuration writes the decision log (JSON lines).",
        ),
    ] {
        item(out, path, what)?;
    }
    writeln!(out, ".SH SIGNALS")?;
    for (signal, what) in [
        (
            "SIGHUP",
            "Read the configuration again; live settings change at once, the others are noted \
             for the next start.",
        ),
        (
            "SIGTERM",
            "The controller prints its last counters and exits; the XDP programs keep guarding \
             with their pinned maps (synguard run adopts them, synguard detach removes them).",
        ),
        (
            "SIGINT",
            "Detach: the programs, pinned maps and state are removed, then the controller exits.",
        ),
    ] {
        item(out, signal, what)?;
    }
    writeln!(out, ".SH \"EXIT STATUS\"")?;
    for (status, what) in [
        (
            "0",
            "Success (for check: run would start with this configuration).",
        ),
        (
            "1",
            "Failure: one line on standard error says what is wrong and how to fix it.",
        ),
        (
            "2",
            "A bad argument, or a request the controller refused as malformed; nothing changed.",
        ),
    ] {
        item(out, status, what)?;
    }
    writeln!(out, ".SH EXAMPLES")?;
    for (command, what) in [
        (
            "synguard run \\-\\-iface eth0 \\-\\-server\\-iface eth1 \\-\\-protect 198.51.100.10/32:80,443",
            "Guard two services of one server behind eth1 from the clients on eth0.",
        ),
        (
            "synguard check \\-\\-config /etc/synguard/synguard.toml",
            "Check a configuration before (re)starting the service.",
        ),
        (
            "synguard status",
            "Flows by state, as ss -s shows sockets; services; the sources with most \
             half-open connections.",
        ),
        (
            "synguard set max\\-syn\\-rate=200 syn\\-burst=400",
            "Lower the per-source SYN limit of the running guard at once.",
        ),
        (
            "synguard block add 203.0.113.0/24 \\-\\-ttl 3600",
            "Drop a prefix in XDP for an hour.",
        ),
    ] {
        // The command is already escaped for roff.
        writeln!(out, ".TP\n\\fB{command}\\fR\n{}", escape(what))?;
    }
    writeln!(
        out,
        ".SH \"SEE ALSO\"\n\\fBsystemctl\\fR(1), \\fBss\\fR(8), \\fBip\\fR(8), \\fBbpftool\\fR(8)"
    )?;
    page.render_version_section(out)?;
    Ok(())
}
