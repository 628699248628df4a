//! `synguard block|allow add|del|list` and `synguard protect add|del|list`: the running guard's
//! lists and services. Block and allow have their own arguments, so a crossed option
//! (`block add --bypass`, `allow add --ttl`) is refused by the parser.

use anyhow::Result;
use clap::{Args, Subcommand};

use super::{guard::ReadArgs, print, render};
use crate::{
    config::{lists::parse_prefix, service::ProtectedService},
    control::protocol::Request,
};

fn prefix_parser(text: &str) -> Result<ipnet::IpNet, String> {
    parse_prefix(text).map_err(|e| e.to_string())
}

#[derive(Args)]
pub struct BlockArgs {
    #[command(subcommand)]
    action: BlockAction,
    #[command(flatten)]
    read: ReadArgs,
}

#[derive(Subcommand)]
enum BlockAction {
    /// Block a prefix (CIDR, or an address for one host).
    Add {
        #[arg(value_name = "PREFIX", value_parser = prefix_parser)]
        prefix: ipnet::IpNet,
        /// Lift the block after this many seconds (default: until `del`).
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=30 * 86400))]
        ttl: Option<u64>,
    },
    /// Lift the block of a prefix.
    Del {
        #[arg(value_name = "PREFIX", value_parser = prefix_parser)]
        prefix: ipnet::IpNet,
    },
    /// List the blocked prefixes.
    List,
}

#[derive(Args)]
pub struct AllowArgs {
    #[command(subcommand)]
    action: AllowAction,
    #[command(flatten)]
    read: ReadArgs,
}

#[derive(Subcommand)]
enum AllowAction {
    /// Allow a prefix (CIDR, or an address for one host): never blocked.
    Add {
        #[arg(value_name = "PREFIX", value_parser = prefix_parser)]
        prefix: ipnet::IpNet,
        /// The prefix's SYNs also skip the cookie challenge.
        #[arg(long)]
        bypass: bool,
    },
    /// Remove a prefix from the allowlist.
    Del {
        #[arg(value_name = "PREFIX", value_parser = prefix_parser)]
        prefix: ipnet::IpNet,
    },
    /// List the allowed prefixes.
    List,
}

pub fn block(args: BlockArgs) -> Result<()> {
    let (request, done) = match args.action {
        BlockAction::Add { prefix, ttl } => (
            Request::BlockAdd { prefix, ttl },
            Some(format!("block {prefix}: added")),
        ),
        BlockAction::Del { prefix } => (
            Request::BlockDel { prefix },
            Some(format!("block {prefix}: removed")),
        ),
        BlockAction::List => (Request::BlockList, None),
    };
    let reply = args.read.guard.ask(request)?;
    print(&reply, args.read.json, |reply| match done {
        Some(line) => Ok(format!("{line}\n")),
        None => render::blocks(reply),
    })
}

pub fn allow(args: AllowArgs) -> Result<()> {
    let (request, done) = match args.action {
        AllowAction::Add { prefix, bypass } => (
            Request::AllowAdd { prefix, bypass },
            Some(format!("allow {prefix}: added")),
        ),
        AllowAction::Del { prefix } => (
            Request::AllowDel { prefix },
            Some(format!("allow {prefix}: removed")),
        ),
        AllowAction::List => (Request::AllowList, None),
    };
    let reply = args.read.guard.ask(request)?;
    print(&reply, args.read.json, |reply| match done {
        Some(line) => Ok(format!("{line}\n")),
        None => render::allows(reply),
    })
}

#[derive(Args)]
pub struct ProtectArgs {
    #[command(subcommand)]
    action: ProtectAction,
    #[command(flatten)]
    read: ReadArgs,
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
    text.parse::<ProtectedService>()
        .map(|_| text.to_string())
        .map_err(|e| e.to_string())
}

/// `synguard protect add|del|list`: the running guard's services.
pub fn protect(args: ProtectArgs) -> Result<()> {
    let request = match args.action {
        ProtectAction::Add { service } => Request::ProtectAdd { service },
        ProtectAction::Del { service } => Request::ProtectDel { service },
        ProtectAction::List => Request::ProtectList,
    };
    let reply = args.read.guard.ask(request)?;
    print(&reply, args.read.json, render::services)
}
