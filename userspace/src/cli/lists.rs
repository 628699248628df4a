//! `synguard block add|del|list` and `synguard allow add|del|list`: the running guard's lists.

use crate::{config::lists::parse_prefix, control::socket};
use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

#[derive(Args)]
pub struct ListArgs {
    #[command(subcommand)]
    action: ListAction,
    /// The guard's client-side interface (needed only when several guards run).
    #[arg(long, short = 'i', value_name = "IFACE", global = true)]
    iface: Option<String>,
    /// Print the controller's JSON answer as it is.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum ListAction {
    /// Add a prefix (CIDR, or an address for one host).
    Add {
        #[arg(value_name = "PREFIX", value_parser = prefix_parser)]
        prefix: ipnet::IpNet,
        /// block: lift the block after this many seconds (default: until `del`).
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=30 * 86400))]
        ttl: Option<u64>,
        /// allow: the prefix's SYNs also skip the cookie challenge.
        #[arg(long)]
        bypass: bool,
    },
    /// Remove a prefix.
    Del {
        #[arg(value_name = "PREFIX", value_parser = prefix_parser)]
        prefix: ipnet::IpNet,
    },
    /// List the prefixes.
    List,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum List {
    Block,
    Allow,
}

fn prefix_parser(text: &str) -> Result<ipnet::IpNet, String> {
    parse_prefix(text).map_err(|e| e.to_string())
}

pub fn run(args: ListArgs, list: List) -> Result<()> {
    let name = match list {
        List::Block => "block",
        List::Allow => "allow",
    };
    let request = match &args.action {
        ListAction::Add { ttl: Some(_), .. } if list == List::Allow => {
            anyhow::bail!("--ttl applies to blocks only: allowlist entries stay until `del`")
        }
        ListAction::Add { bypass: true, .. } if list == List::Block => {
            anyhow::bail!("--bypass applies to the allowlist only")
        }
        ListAction::Add {
            prefix,
            ttl,
            bypass,
        } => json!({
            "request": format!("{name}_add"),
            "prefix": prefix.to_string(),
            "ttl": ttl,
            "bypass": bypass,
        }),
        ListAction::Del { prefix } => {
            json!({ "request": format!("{name}_del"), "prefix": prefix.to_string() })
        }
        ListAction::List => json!({ "request": format!("{name}_list") }),
    };
    let answer = socket::ask(args.iface.as_deref(), &request)?;
    if args.json {
        println!("{answer}");
        return Ok(());
    }
    match &args.action {
        ListAction::Add { prefix, .. } => println!("{name} {prefix}: added"),
        ListAction::Del { prefix } => println!("{name} {prefix}: removed"),
        ListAction::List => print!("{}", list_text(&answer, list)),
    }
    Ok(())
}

fn list_text(answer: &Value, list: List) -> String {
    let mut text = String::new();
    match list {
        List::Block => {
            text.push_str(&format!(
                "{:<44} {:<18} {:>12} {:>12}\n",
                "Prefix", "Reason", "Measured", "Expires(s)"
            ));
            let now = crate::clock::unix_now();
            for block in answer["blocks"].as_array().into_iter().flatten() {
                let expires = block["until"]
                    .as_f64()
                    .map_or("never".to_string(), |until| format!("{:.0}", until - now));
                text.push_str(&format!(
                    "{:<44} {:<18} {:>12.0} {:>12}\n",
                    block["prefix"].as_str().unwrap_or(""),
                    block["reason"].as_str().unwrap_or(""),
                    block["measured"].as_f64().unwrap_or(0.0),
                    expires
                ));
            }
        }
        List::Allow => {
            text.push_str(&format!("{:<44} {}\n", "Prefix", "Cookie challenge"));
            for allow in answer["allows"].as_array().into_iter().flatten() {
                let bypass = allow["bypass"].as_bool().unwrap_or(false);
                text.push_str(&format!(
                    "{:<44} {}\n",
                    allow["prefix"].as_str().unwrap_or(""),
                    if bypass { "skipped" } else { "as the service" }
                ));
            }
        }
    }
    text
}

#[derive(Args)]
pub struct ProtectArgs {
    #[command(subcommand)]
    action: ProtectAction,
    /// The guard's client-side interface (needed only when several guards run).
    #[arg(long, short = 'i', value_name = "IFACE", global = true)]
    iface: Option<String>,
    /// Print the controller's JSON answer as it is.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum ProtectAction {
    /// Protect a service at once: CIDR:PORTS[:MODE], as --protect takes it.
    Add {
        #[arg(value_name = "CIDR:PORTS[:MODE]", value_parser = service_parser)]
        service: String,
    },
    /// Stop protecting the service with this prefix and these ports (its flows go on).
    Del {
        #[arg(value_name = "CIDR:PORTS", value_parser = service_parser)]
        service: String,
    },
    /// List the protected services, their modes and whether cookies are on.
    List,
}

fn service_parser(text: &str) -> Result<String, String> {
    text.parse::<crate::config::service::ProtectedService>()
        .map(|_| text.to_string())
        .map_err(|e| e.to_string())
}

/// `synguard protect add|del|list`: the running guard's services.
pub fn protect(args: ProtectArgs) -> Result<()> {
    let request = match &args.action {
        ProtectAction::Add { service } => json!({ "request": "protect_add", "service": service }),
        ProtectAction::Del { service } => json!({ "request": "protect_del", "service": service }),
        ProtectAction::List => json!({ "request": "protect_list" }),
    };
    let answer = socket::ask(args.iface.as_deref(), &request)?;
    if args.json {
        println!("{answer}");
        return Ok(());
    }
    println!("{:<4} {:<44} {:<8} Cookies", "Slot", "Service", "Mode");
    for service in answer["services"].as_array().into_iter().flatten() {
        println!(
            "{:<4} {:<44} {:<8} {}",
            service["slot"],
            service["service"].as_str().unwrap_or(""),
            service["mode"].as_str().unwrap_or(""),
            if service["cookies_on"].as_bool().unwrap_or(false) {
                "on"
            } else {
                "off"
            }
        );
    }
    Ok(())
}
