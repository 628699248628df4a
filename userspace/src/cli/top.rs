//! `synguard top`: a live view of the running guard, redrawn every interval: SYN/s and the
//! cookie paths, drops by reason, flows by state, the sources with most half-open connections,
//! the current blocks. When stdout is not a terminal, one plain line per interval instead.

use std::{
    collections::BTreeMap,
    io::IsTerminal,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use clap::Args;
use ratatui::{
    crossterm::event::{self, Event, KeyCode, KeyModifiers},
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Block, Borders, Paragraph, Row, Table},
};

use super::guard::GuardArgs;
use crate::{
    control::protocol::{Reply, Request, Status},
    flows::tcp_state::State,
    policy::engine::Block as Blocked,
};

#[derive(Args)]
pub struct TopArgs {
    #[command(flatten)]
    guard: GuardArgs,
    /// Seconds between refreshes.
    #[arg(long, short = 'd', value_name = "SECONDS", default_value_t = 1.0,
          value_parser = crate::config::value_parsers::seconds_parser(0.2, 60.0))]
    delay: f64,
    /// Stop after this many refreshes (0: until q or ^C).
    #[arg(long, short = 'n', value_name = "COUNT", default_value_t = 0)]
    count: u64,
}

/// One look at the guard: its counters, its status, its blocks; rates against the last look.
struct Frame {
    totals: BTreeMap<String, u64>,
    rates: BTreeMap<String, f64>,
    status: Status,
    blocks: Vec<Blocked>,
}

impl Frame {
    fn rate(&self, name: &str) -> f64 {
        self.rates.get(name).copied().unwrap_or(0.0)
    }
}

struct Poller {
    guard: GuardArgs,
    last: Option<(BTreeMap<String, u64>, Instant)>,
}

impl Poller {
    fn poll(&mut self) -> Result<Frame> {
        let Reply::Stats(stats) = self.guard.ask(Request::Stats)? else {
            bail!("the guard answered `stats` with something else");
        };
        let Reply::Status(status) = self.guard.ask(Request::Status)? else {
            bail!("the guard answered `status` with something else");
        };
        let Reply::Blocks { blocks } = self.guard.ask(Request::BlockList)? else {
            bail!("the guard answered `block list` with something else");
        };
        let totals = stats.total;
        let now = Instant::now();
        let rates = match &self.last {
            Some((before, at)) => {
                let elapsed = now.duration_since(*at).as_secs_f64().max(1e-3);
                totals
                    .iter()
                    .map(|(name, value)| {
                        let delta = value.saturating_sub(before.get(name).copied().unwrap_or(0));
                        (name.clone(), delta as f64 / elapsed)
                    })
                    .collect()
            }
            None => BTreeMap::new(),
        };
        self.last = Some((totals.clone(), now));
        Ok(Frame {
            totals,
            rates,
            status,
            blocks,
        })
    }
}

pub fn top(args: TopArgs) -> Result<()> {
    let mut poller = Poller {
        guard: args.guard.clone(),
        last: None,
    };
    // The first look only gives totals; rates need a second.
    poller.poll()?;
    let delay = Duration::from_secs_f64(args.delay);
    if std::io::stdout().is_terminal() {
        let mut terminal = ratatui::init();
        let result = run_terminal(&mut terminal, &mut poller, delay, args.count);
        ratatui::restore();
        result
    } else {
        let mut shown = 0;
        loop {
            std::thread::sleep(delay);
            println!("{}", plain_line(&poller.poll()?));
            shown += 1;
            if args.count != 0 && shown >= args.count {
                return Ok(());
            }
        }
    }
}

fn run_terminal(
    terminal: &mut ratatui::DefaultTerminal,
    poller: &mut Poller,
    delay: Duration,
    count: u64,
) -> Result<()> {
    let mut shown = 0;
    let mut next = Instant::now() + delay;
    loop {
        let timeout = next.saturating_duration_since(Instant::now());
        if event::poll(timeout)? {
            if let Event::Key(key) = event::read()?
                && (key.code == KeyCode::Char('q')
                    || (key.code == KeyCode::Char('c')
                        && key.modifiers.contains(KeyModifiers::CONTROL)))
            {
                return Ok(());
            }
            continue;
        }
        next = Instant::now() + delay;
        let frame = poller.poll()?;
        terminal.draw(|f| draw(f, &frame))?;
        shown += 1;
        if count != 0 && shown >= count {
            return Ok(());
        }
    }
}

fn per_second(value: f64) -> String {
    format!("{value:.0}/s")
}

/// The headline: what the SYN paths did per second.
fn headline(frame: &Frame) -> String {
    format!(
        "seen {}  SYN cookies {}  validated {}  admitted {}  passed {}  dropped {}  blocked {}",
        per_second(frame.rate("seen")),
        per_second(frame.rate("tx_syn_cookie")),
        per_second(frame.rate("cookie_valid")),
        per_second(frame.rate("pass_admitted")),
        per_second(frame.rate("passed")),
        per_second(frame.rate("dropped")),
        per_second(frame.rate("drop_blocked")),
    )
}

fn plain_line(frame: &Frame) -> String {
    let flows = &frame.status.flows;
    let state = |name: &str| flows.states.get(name).copied().unwrap_or(0);
    let top = frame
        .status
        .policy
        .top_sources
        .first()
        .map(|s| format!(" | top source {} half-open {:.0}", s.source, s.half_open))
        .unwrap_or_default();
    format!(
        "{} | flows {} (estab {}, synrecv {}, timewait {}) | blocks {}{top}",
        headline(frame),
        flows.total,
        state("ESTAB"),
        state("SYN-RECV"),
        state("TIME-WAIT"),
        frame.blocks.len(),
    )
}

fn draw(f: &mut ratatui::Frame, frame: &Frame) {
    let [head, body] =
        Layout::vertical([Constraint::Length(3), Constraint::Min(8)]).areas(f.area());
    let [left, middle, right] = Layout::horizontal([
        Constraint::Percentage(38),
        Constraint::Percentage(22),
        Constraint::Percentage(40),
    ])
    .areas(body);
    let [sources, blocks] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(right);

    f.render_widget(
        Paragraph::new(Line::from(headline(frame))).block(panel("synguard top (q quits)")),
        head,
    );

    let mut drops: Vec<(&String, u64)> = frame
        .totals
        .iter()
        .filter(|(name, value)| name.starts_with("drop_") && **value > 0)
        .map(|(name, value)| (name, *value))
        .collect();
    drops.sort_by(|a, b| {
        frame
            .rate(b.0)
            .total_cmp(&frame.rate(a.0))
            .then(b.1.cmp(&a.1))
    });
    let rows = drops.iter().map(|(name, total)| {
        Row::new([
            name.to_string(),
            per_second(frame.rate(name)),
            total.to_string(),
        ])
    });
    f.render_widget(
        panel_table(
            rows,
            &[3, 1, 1],
            ["reason", "rate", "total"],
            "Drops by reason",
        ),
        left,
    );

    let rows = State::ALL.iter().map(|state| {
        Row::new([
            state.name().to_string(),
            frame
                .status
                .flows
                .states
                .get(state.name())
                .copied()
                .unwrap_or(0)
                .to_string(),
        ])
    });
    f.render_widget(
        panel_table(rows, &[2, 1], ["state", "flows"], "Flows by state"),
        middle,
    );

    let rows = frame.status.policy.top_sources.iter().map(|s| {
        Row::new([
            s.source.clone(),
            format!("{:.0}", s.half_open),
            per_second(s.syn_rate),
        ])
    });
    f.render_widget(
        panel_table(
            rows,
            &[3, 1, 1],
            ["source", "half-open", "SYN"],
            "Top sources by half-open",
        ),
        sources,
    );

    let now = crate::clock::unix_now();
    let rows = frame.blocks.iter().map(|b| {
        Row::new([
            b.prefix.to_string(),
            b.reason.name().to_string(),
            b.until
                .map_or("never".to_string(), |until| format!("{:.0}s", until - now)),
        ])
    });
    f.render_widget(
        panel_table(rows, &[3, 2, 1], ["prefix", "reason", "expires"], "Blocks"),
        blocks,
    );
}

fn panel(title: &'static str) -> Block<'static> {
    Block::default().borders(Borders::ALL).title(title)
}

/// A bordered, titled table; `widths` are relative, the header bold.
fn panel_table<'a, const N: usize>(
    rows: impl IntoIterator<Item = Row<'a>>,
    widths: &[u16],
    header: [&'a str; N],
    title: &'static str,
) -> Table<'a> {
    Table::new(rows, widths.iter().map(|w| Constraint::Fill(*w)))
        .header(Row::new(header).style(Style::default().add_modifier(Modifier::BOLD)))
        .block(panel(title))
}
