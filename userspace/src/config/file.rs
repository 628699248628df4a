//! Configuration: a TOML file whose keys are `synguard run`'s long flags
//! (`max-syn-rate = 500`, `protect = ["198.19.1.2/32:80:auto"]`, `json = true`), the flags
//! themselves, and `synguard set` on the running guard, in that order of precedence.
//!
//! The file is turned into flags and parsed by the same clap definitions as the command line,
//! so a value is checked once, one way, with the same message naming its valid range.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsString,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, anyhow, bail};
use clap::{ArgAction, ArgMatches, Args, Command, FromArgMatches, parser::ValueSource};

use crate::config::{
    run_args::RunArgs,
    setting::{Setting, Source},
};

/// Read when `--config` is not given (and only if it exists).
pub const DEFAULT_CONFIG: &str = "/etc/synguard/synguard.toml";

/// The settings of a run: what the file said, what the flags said, what `set` changed since.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file read (None: no `--config` and no default file).
    pub path: Option<PathBuf>,
    /// The flags as given after `run`.
    cli: Vec<OsString>,
    /// Keys given on the command line.
    explicit: BTreeSet<String>,
    /// Keys the file gave, as flags.
    file: BTreeMap<String, Vec<OsString>>,
    /// Keys `set` changed, as flags.
    sets: BTreeMap<String, Vec<OsString>>,
    /// Every key's effective value and source.
    pub effective: BTreeMap<String, Setting>,
}

/// `synguard run` as clap defines it; here a later value of a flag replaces an earlier one
/// (the file's, the command line's, then `set`'s), and a repeatable flag's values add up.
fn run_command() -> Command {
    RunArgs::augment_args(Command::new("run")).args_override_self(true)
}

/// A clap error as one line: its message without the usage and tip sections.
pub fn one_line(error: &clap::Error) -> String {
    let rendered = error.to_string();
    let message: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|line| !line.is_empty() && !line.starts_with("Usage:"))
        .collect();
    message.join(" ").trim_start_matches("error: ").to_string()
}

fn parse(argv: impl IntoIterator<Item = OsString>) -> Result<ArgMatches> {
    run_command()
        .try_get_matches_from(std::iter::once(OsString::from("run")).chain(argv))
        .map_err(|e| anyhow!("{}", one_line(&e)))
}

/// Parses `pieces` (the flags of one setting) alone, to check them: clap's message names the
/// valid range.
fn check(pieces: &[OsString]) -> Result<RunArgs> {
    let mut argv: Vec<OsString> = Vec::new();
    if !pieces.iter().any(|p| p == "--iface") {
        argv.extend(["--iface".into(), "lo".into()]);
    }
    argv.extend(pieces.iter().cloned());
    let matches = parse(argv)?;
    RunArgs::from_arg_matches(&matches).map_err(|e| anyhow!("{}", one_line(&e)))
}

/// The long flags of `run`, and whether each is an on/off switch or repeatable.
fn arguments() -> Vec<(String, String, bool, bool)> {
    run_command()
        .get_arguments()
        .filter_map(|arg| {
            let long = arg.get_long()?.to_string();
            let switch = matches!(arg.get_action(), ArgAction::SetTrue);
            let repeatable = matches!(arg.get_action(), ArgAction::Append);
            Some((arg.get_id().to_string(), long, switch, repeatable))
        })
        .filter(|(_, long, _, _)| !matches!(long.as_str(), "config" | "help"))
        .collect()
}

/// One setting as flags: `key` and its TOML value (or values, for a repeatable flag).
fn setting_flags(key: &str, value: &toml::Value) -> Result<Vec<OsString>> {
    let (_, _, switch, repeatable) = arguments()
        .into_iter()
        .find(|(_, long, _, _)| long == key)
        .ok_or_else(|| {
            anyhow!("unknown key {key:?}: the keys are synguard run's long flags (see `synguard run --help`)")
        })?;
    let values: Vec<&toml::Value> = match value {
        toml::Value::Array(items) if repeatable => items.iter().collect(),
        toml::Value::Array(_) => bail!("{key} takes one value, not a list"),
        single => vec![single],
    };
    let flag = OsString::from(format!("--{key}"));
    let mut pieces = Vec::new();
    for value in values {
        match (switch, value) {
            (true, toml::Value::Boolean(true)) => pieces.push(flag.clone()),
            (true, toml::Value::Boolean(false)) => {}
            (true, _) => bail!("{key} is true or false"),
            (false, toml::Value::String(text)) => {
                pieces.extend([flag.clone(), text.into()]);
            }
            (false, toml::Value::Integer(number)) => {
                pieces.extend([flag.clone(), number.to_string().into()]);
            }
            (false, toml::Value::Float(number)) => {
                pieces.extend([flag.clone(), number.to_string().into()]);
            }
            (false, other) => bail!("{key}: {other} is not a value for --{key}"),
        }
    }
    check(&pieces).with_context(|| format!("key {key}"))?;
    Ok(pieces)
}

/// The file's settings as flags, each checked.
fn read_file(path: &Path) -> Result<BTreeMap<String, Vec<OsString>>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the configuration {}", path.display()))?;
    parse_file(&text).with_context(|| format!("in {}", path.display()))
}

fn parse_file(text: &str) -> Result<BTreeMap<String, Vec<OsString>>> {
    let table: toml::Table = text
        .parse()
        .map_err(|error: toml::de::Error| anyhow!("{}", toml_error(text, &error)))?;
    table
        .iter()
        .map(|(key, value)| Ok((key.clone(), setting_flags(key, value)?)))
        .collect()
}

/// A TOML error as one line: where (line and column, counted from 1) and the parser's reason.
fn toml_error(text: &str, error: &toml::de::Error) -> String {
    let reason = error.message().trim().replace('\n', "; ");
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |at| at + 1) + 1;
            format!("line {line}, column {column}: {reason}")
        }
        None => reason,
    }
}

impl Config {
    /// The settings of `synguard run ARGS`: the file (`--config`, else the default path if it
    /// exists), overridden by the flags.
    pub fn load(cli: Vec<OsString>) -> Result<(RunArgs, Config)> {
        let first = parse(cli.clone())?;
        let explicit = explicit_keys(&first);
        let (path, file) = match first.get_one::<PathBuf>("config") {
            Some(path) => (Some(path.clone()), read_file(path)?),
            None if Path::new(DEFAULT_CONFIG).exists() => {
                let path = PathBuf::from(DEFAULT_CONFIG);
                let file = read_file(&path)?;
                (Some(path), file)
            }
            None => (None, BTreeMap::new()),
        };
        let mut config = Config {
            path,
            cli,
            explicit,
            file,
            sets: BTreeMap::new(),
            effective: BTreeMap::new(),
        };
        let args = config.resolve()?;
        Ok((args, config))
    }

    /// Parses file < flags < sets into the effective arguments, and notes each key's source.
    fn resolve(&mut self) -> Result<RunArgs> {
        let mut argv: Vec<OsString> = Vec::new();
        for (key, pieces) in &self.file {
            if !self.explicit.contains(key) && !self.sets.contains_key(key) {
                argv.extend(pieces.iter().cloned());
            }
        }
        argv.extend(self.cli.iter().cloned());
        for pieces in self.sets.values() {
            argv.extend(pieces.iter().cloned());
        }
        let matches = parse(argv)?;
        let args = RunArgs::from_arg_matches(&matches).map_err(|e| anyhow!("{}", one_line(&e)))?;
        self.effective = arguments()
            .into_iter()
            .map(|(id, long, switch, _)| {
                let value = if switch {
                    vec![matches.get_flag(&id).to_string()]
                } else {
                    matches
                        .get_raw(&id)
                        .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect())
                        .unwrap_or_default()
                };
                let source = if self.sets.contains_key(&long) {
                    Source::Set
                } else if self.explicit.contains(&long) {
                    Source::Flag
                } else if matches.value_source(&id) == Some(ValueSource::CommandLine) {
                    Source::File
                } else {
                    Source::Default
                };
                (long, Setting { value, source })
            })
            .collect();
        Ok(args)
    }

    /// `synguard set KEY=VALUE`: checked (nothing is taken if one is wrong), then the new
    /// effective arguments. A repeatable key's value replaces its whole list.
    pub fn set(&mut self, settings: &[(String, String)]) -> Result<RunArgs> {
        let mut sets = self.sets.clone();
        for (key, value) in settings {
            let pieces = setting_flags(key, &toml::Value::String(value.clone())).or_else(
                |error| match value.parse::<bool>() {
                    Ok(on) => setting_flags(key, &toml::Value::Boolean(on)),
                    Err(_) => Err(error),
                },
            )?;
            sets.insert(key.clone(), pieces);
        }
        let before = self.sets.clone();
        self.sets = sets;
        self.resolve().inspect_err(|_| {
            self.sets = before;
        })
    }

    /// SIGHUP: reads the file again; flags and sets still win.
    pub fn reload(&mut self) -> Result<RunArgs> {
        let Some(path) = self.path.clone() else {
            bail!("no configuration file to reload (start with --config PATH)");
        };
        let file = read_file(&path)?;
        let before = std::mem::replace(&mut self.file, file);
        self.resolve().inspect_err(|_| {
            self.file = before;
        })
    }
}

/// Keys the command line gave.
fn explicit_keys(matches: &ArgMatches) -> BTreeSet<String> {
    arguments()
        .into_iter()
        .filter(|(id, _, _, _)| matches.value_source(id) == Some(ValueSource::CommandLine))
        .map(|(_, long, _, _)| long)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn config_with(file: &str, cli: &[&str]) -> (RunArgs, Config) {
        let path = std::env::temp_dir().join(format!(
            "synguard-config-{}-{}.toml",
            std::process::id(),
            file.len()
        ));
        std::fs::write(&path, file).unwrap();
        let mut argv = os(&["--config", path.to_str().unwrap()]);
        argv.extend(os(cli));
        let loaded = Config::load(argv);
        std::fs::remove_file(&path).unwrap();
        loaded.unwrap()
    }

    #[test]
    fn file_then_flags_then_set() {
        let (args, mut config) = config_with(
            "iface = \"eth0\"\nmax-syn-rate = 500\nsyn-burst = 700\njson = true\nprotect = [\"198.19.1.2:80\", \"198.19.1.3:443:auto\"]\n",
            &["--syn-burst", "900"],
        );
        assert_eq!(args.start.iface.as_deref(), Some("eth0"));
        assert_eq!(
            (args.live.policy.max_syn_rate, args.live.policy.syn_burst),
            (500, 900)
        );
        assert!(args.start.json);
        assert_eq!(args.start.protect.len(), 2);
        let source = |config: &Config, key: &str| config.effective[key].source;
        assert_eq!(source(&config, "max-syn-rate"), Source::File);
        assert_eq!(source(&config, "syn-burst"), Source::Flag);
        assert_eq!(source(&config, "block-ttl"), Source::Default);
        assert_eq!(config.effective["syn-burst"].value, ["900"]);
        assert_eq!(config.effective["json"].value, ["true"]);

        let args = config.set(&[("syn-burst".into(), "100".into())]).unwrap();
        assert_eq!(args.live.policy.syn_burst, 100, "set wins over the flag");
        assert_eq!(source(&config, "syn-burst"), Source::Set);
        assert_eq!(args.live.policy.max_syn_rate, 500, "the rest stays");
    }

    #[test]
    fn a_toml_error_gives_the_parsers_reason_line_and_column() {
        let error = parse_file("iface = \"eth0\"\nmax-syn-rate = = 5\n")
            .unwrap_err()
            .to_string();
        assert_eq!(error, "line 2, column 16: extra `=`, expected nothing");
        let error = parse_file("[unclosed\n").unwrap_err().to_string();
        assert!(error.starts_with("line 1, column "), "{error}");
        assert!(!error.contains('\n'), "one line: {error}");
    }

    #[test]
    fn bad_values_name_the_key_and_the_range_and_change_nothing() {
        let (_, mut config) = config_with("iface = \"eth0\"\n", &[]);
        let error = config
            .set(&[
                ("block-ttl".into(), "30".into()),
                ("max-syn-rate".into(), "-5".into()),
            ])
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(error.contains("max-syn-rate"), "{error}");
        assert_eq!(config.effective["block-ttl"].value, ["60"], "nothing taken");
        for (file, says) in [
            (
                "iface = \"eth0\"\nmax-syn-rate = 2000000000\n",
                "max-syn-rate",
            ),
            ("iface = \"eth0\"\nfast = true\n", "unknown key \"fast\""),
            ("iface = \"eth0\"\njson = 1\n", "json is true or false"),
            ("iface = \"eth0\"\nmsl = [1, 2]\n", "msl takes one value"),
            (
                "iface = \"eth0\"\nmsl = 0.01\n",
                "not a number of seconds between 0.1 and 600",
            ),
            ("iface = \"eth0\nmsl = 1\n", "in "),
        ] {
            let path =
                std::env::temp_dir().join(format!("synguard-bad-{}.toml", std::process::id()));
            std::fs::write(&path, file).unwrap();
            let error = Config::load(os(&["--config", path.to_str().unwrap()]))
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default();
            std::fs::remove_file(&path).unwrap();
            assert!(error.contains(says), "{file:?}: {error}");
            assert!(error.contains("synguard-bad-"), "names the file: {error}");
        }
    }

    #[test]
    fn the_packaged_example_is_valid() {
        let text = include_str!("../../../packaging/synguard.toml");
        let file = parse_file(text).unwrap();
        assert_eq!(file["protect"].len(), 4, "two --protect flags");
        let argv: Vec<OsString> = file.into_values().flatten().collect();
        let args = RunArgs::from_arg_matches(&parse(argv).unwrap()).unwrap();
        assert_eq!(args.start.iface.as_deref(), Some("eth0"));
        assert_eq!(args.live.policy.max_syn_rate, 1000);
    }

    #[test]
    fn reload_keeps_flags_and_sets_on_top() {
        let path =
            std::env::temp_dir().join(format!("synguard-reload-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "iface = \"eth0\"\nblock-ttl = 10\nmsl = 5\nsyn-burst = 50\n",
        )
        .unwrap();
        let (_, mut config) =
            Config::load(os(&["--config", path.to_str().unwrap(), "--msl", "7"])).unwrap();
        config.set(&[("syn-burst".into(), "60".into())]).unwrap();
        std::fs::write(
            &path,
            "iface = \"eth0\"\nblock-ttl = 20\nmsl = 9\nsyn-burst = 70\n",
        )
        .unwrap();
        let args = config.reload().unwrap();
        assert_eq!(args.live.policy.block_ttl, 20, "the file's new value");
        assert_eq!(args.live.msl, 7.0, "the flag still wins");
        assert_eq!(args.live.policy.syn_burst, 60, "the set still wins");
        std::fs::write(&path, "iface = \"eth0\"\nblock-ttl = 0\n").unwrap();
        assert!(config.reload().is_err(), "a bad file is refused");
        assert_eq!(
            config.effective["block-ttl"].value,
            ["20"],
            "and changes nothing"
        );
        std::fs::remove_file(&path).unwrap();
    }
}
