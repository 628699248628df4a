//! The operator's lists of prefixes: one prefix as written on the command line, and list files
//! (`--allow-file`, `--block-file`).

use std::{net::IpAddr, path::Path};

use anyhow::{Context, Result, anyhow, bail};
use ipnet::IpNet;

/// A prefix as the operator may write it: CIDR, or a bare address (a host).
pub fn parse_prefix(text: &str) -> Result<IpNet> {
    match text.parse::<IpNet>() {
        Ok(net) => Ok(net.trunc()),
        Err(_) => text.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
            anyhow!("{text:?} is not an address or a prefix (e.g. 198.18.0.66 or 198.18.0.0/24)")
        }),
    }
}

/// An entry of a list file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListEntry {
    pub prefix: IpNet,
    /// For the allowlist: `bypass` after the prefix skips the cookie challenge.
    pub bypass: bool,
}

/// Reads a block or allow list: one prefix per line, `#` comments, blank lines; an allow entry
/// may add the word `bypass`. Errors name the file and the line.
pub fn read_list(path: &Path, allow: bool) -> Result<Vec<ListEntry>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the list {}", path.display()))?;
    let mut entries = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let at = || format!("{} line {}", path.display(), number + 1);
        let prefix = parse_prefix(words.next().unwrap_or("")).with_context(at)?;
        let bypass = match words.next() {
            None => false,
            Some("bypass") if allow => true,
            Some(word) => bail!(
                "{}: unexpected {word:?} after the prefix{}",
                at(),
                if allow {
                    " (only `bypass` may follow)"
                } else {
                    ""
                }
            ),
        };
        if let Some(word) = words.next() {
            bail!("{}: unexpected {word:?}", at());
        }
        entries.push(ListEntry { prefix, bypass });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_files() {
        let path = std::env::temp_dir().join(format!("synguard-list-{}", std::process::id()));
        std::fs::write(
            &path,
            "# partners\n198.18.0.0/24 bypass\n\n2001:db8::1   # a host\n198.18.5.7/16\n",
        )
        .unwrap();
        let entries = read_list(&path, true).unwrap();
        assert_eq!(
            entries,
            [
                ListEntry {
                    prefix: "198.18.0.0/24".parse().unwrap(),
                    bypass: true
                },
                ListEntry {
                    prefix: "2001:db8::1/128".parse().unwrap(),
                    bypass: false
                },
                ListEntry {
                    prefix: "198.18.0.0/16".parse().unwrap(),
                    bypass: false
                },
            ]
        );
        let error = format!("{:#}", read_list(&path, false).unwrap_err());
        assert!(
            error.contains("line 2") && error.contains("bypass"),
            "{error}"
        );
        std::fs::write(&path, "198.18.0.300\n").unwrap();
        let error = format!("{:#}", read_list(&path, false).unwrap_err());
        assert!(
            error.contains("line 1") && error.contains("not an address"),
            "{error}"
        );
        std::fs::remove_file(&path).unwrap();
    }
}
