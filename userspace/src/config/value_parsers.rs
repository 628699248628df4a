//! Parsers of flag values that clap has none for (seconds in a range, idle timeouts per state,
//! the counter interval): each error says what is wrong and what the range is.

use crate::flows::tcp_state::State;

/// Seconds between `min` and `max` (fractions allowed).
pub fn seconds_parser(min: f64, max: f64) -> impl Fn(&str) -> Result<f64, String> + Clone {
    move |text: &str| match text.parse::<f64>() {
        Ok(seconds) if (min..=max).contains(&seconds) => Ok(seconds),
        _ => Err(format!(
            "{text:?} is not a number of seconds between {min} and {max}"
        )),
    }
}

pub fn parse_idle_timeout(text: &str) -> Result<(State, u64), String> {
    let (name, seconds) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not STATE=SECONDS"))?;
    let state = State::ALL
        .into_iter()
        .find(|state| {
            state.key() == name && !matches!(state, State::Closed | State::Listen | State::TimeWait)
        })
        .ok_or_else(|| {
            format!("{name:?} is not a state with an idle timeout (TIME-WAIT follows --msl)")
        })?;
    let seconds = seconds
        .parse::<u64>()
        .ok()
        .filter(|s| *s <= 30 * 86400)
        .ok_or_else(|| format!("{seconds:?} is not a whole number of seconds up to 30 days"))?;
    Ok((state, seconds))
}

pub fn parse_interval(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if (0.1..=3600.0).contains(&seconds) => Ok(seconds),
        _ => Err(format!(
            "{text:?} is not a number of seconds between 0.1 and 3600"
        )),
    }
}
