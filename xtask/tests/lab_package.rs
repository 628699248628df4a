//! The Debian package, as an operator meets it: installed with dpkg on this Debian, the unit
//! verified and rated by systemd's own analyzers, the packaged configuration checked, an
//! upgrade over it keeping a local edit, a purge leaving nothing behind. Needs root and the
//! package `cargo xtask test` builds (SYNGUARD_DEB).

use std::{path::Path, process::Command};

use xtask::lab::{GUARD_CLIENT_IFACE, GUARD_SERVER_IFACE, Host};

mod support;

use support::new_lab;

const UNIT: &str = "/usr/lib/systemd/system/synguard.service";
const CONFIG: &str = "/etc/synguard/synguard.toml";

fn deb() -> String {
    std::env::var("SYNGUARD_DEB")
        .expect("SYNGUARD_DEB is not set: run the lab tests through `cargo xtask test`")
}

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_package_installs_checks_upgrades_and_purges_cleanly() {
    // A run that died midway may have left it installed.
    let _ = run("dpkg", &["--purge", "synguard"]);
    let (ok, out) = run("dpkg", &["-i", &deb()]);
    assert!(ok, "{out}");
    for path in [
        "/usr/sbin/synguard",
        UNIT,
        CONFIG,
        "/usr/share/man/man8/synguard.8.gz",
        "/usr/share/bash-completion/completions/synguard",
        "/usr/share/synguard/prometheus-alerts.yml",
        "/usr/share/doc/synguard/LICENSE-MIT",
        "/var/log/synguard",
    ] {
        assert!(Path::new(path).exists(), "{path} missing");
    }
    let (ok, out) = run("dpkg-query", &["-W", "-f=${Conffiles}", "synguard"]);
    assert!(
        ok && out.contains(CONFIG),
        "the configuration is a conffile: {out}"
    );

    // The unit, against the installed paths.
    let (ok, out) = run("systemd-analyze", &["verify", UNIT]);
    assert!(ok && out.trim().is_empty(), "{out}");
    let (_, out) = run("systemd-analyze", &["security", "--offline=true", UNIT]);
    let exposure: f64 = out
        .lines()
        .find_map(|line| line.split("synguard.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure in:\n{out}"));
    assert!(exposure <= 5.0, "exposure {exposure}");

    // The packaged configuration, with this lab's interfaces (flags win over the file).
    let lab = new_lab();
    let out = lab
        .exec(
            Host::Guard,
            "/usr/sbin/synguard",
            [
                "check",
                "--config",
                CONFIG,
                "--iface",
                GUARD_CLIENT_IFACE,
                "--server-iface",
                GUARD_SERVER_IFACE,
            ],
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("the configuration is valid"), "{stdout}");
    assert!(
        stdout.contains("max-syn-rate") && stdout.contains("file"),
        "{stdout}"
    );
    let broken = std::env::temp_dir().join(format!("synguard-broken-{}.toml", std::process::id()));
    std::fs::write(&broken, "iface = \"to-client\"\nmax-syn-rate = = 5\n").unwrap();
    let (ok, out) = run(
        "/usr/sbin/synguard",
        &["check", "--config", broken.to_str().unwrap()],
    );
    std::fs::remove_file(&broken).unwrap();
    assert!(!ok);
    assert!(
        out.trim().lines().count() == 1 && out.contains("line 2, column 16: extra `=`"),
        "{out}"
    );

    // An upgrade (the same package again) keeps the operator's edit of the configuration.
    let edited = format!(
        "{}\n# edited by the operator\n",
        std::fs::read_to_string(CONFIG).unwrap()
    );
    std::fs::write(CONFIG, &edited).unwrap();
    let (ok, out) = run("dpkg", &["-i", &deb()]);
    assert!(ok, "{out}");
    assert_eq!(std::fs::read_to_string(CONFIG).unwrap(), edited);

    // A purge leaves nothing.
    let (ok, out) = run("dpkg", &["--purge", "synguard"]);
    assert!(ok, "{out}");
    for path in [
        "/usr/sbin/synguard",
        UNIT,
        "/etc/synguard",
        "/var/log/synguard",
    ] {
        assert!(!Path::new(path).exists(), "{path} left behind");
    }
}
