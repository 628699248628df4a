//! Log lines for where they go: a terminal gets timestamps; journald (`JOURNAL_STREAM` set by
//! systemd) stamps the time itself and reads each line's syslog priority from a `<N>` prefix.

use std::io::Write;

use log::{Level, LevelFilter};

/// Whether stderr goes to journald.
pub fn to_journal() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some()
}

/// The syslog priority of a log level (RFC 5424: 3 error, 4 warning, 6 info, 7 debug).
pub fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// The logger passes everything; the global maximum is the level, so `set` can change it.
pub fn init_logger() {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(LevelFilter::Trace);
    if to_journal() {
        builder
            .format(|out, record| writeln!(out, "<{}>{}", priority(record.level()), record.args()));
    } else {
        builder.format_timestamp_millis();
    }
    builder.init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(
            [
                Level::Error,
                Level::Warn,
                Level::Info,
                Level::Debug,
                Level::Trace
            ]
            .map(priority),
            [3, 4, 6, 7, 7]
        );
    }
}
