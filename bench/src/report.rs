//! The table: rates, latencies, errors, ratios against the matching raw and management rows,
//! and the targets they are held to. Printed aligned for a terminal and as Markdown.

use std::fmt::Write as _;
use std::time::Duration;

use crate::{Group, Outcome, Row};

pub struct Summary {
    pub idle_rss_kib: Option<u64>,
    pub peak_rss_kib: Option<u64>,
    pub end_rss_kib: Option<u64>,
    /// CPU the gateway used since it started.
    pub total_cpu_s: Option<f64>,
    /// CPU the gateway used from the first scenario to the last.
    pub run_cpu_s: Option<f64>,
    pub wall: Duration,
    pub gateway_alive: bool,
    pub load_before: Option<String>,
    pub load_after: Option<String>,
}

pub struct Rendered {
    pub plain: String,
    pub markdown: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Base {
    Raw,
    Management,
}

/// A gateway row, the row it is compared with, and the least ratio wanted (if any).
struct Compare {
    row: &'static str,
    base: &'static str,
    kind: Base,
    target: Option<f64>,
    text: &'static str,
}

const COMPARES: &[Compare] = &[
    Compare {
        row: "gw-publish-1",
        base: "raw-publish-1",
        kind: Base::Raw,
        target: None,
        text: "publish x1 vs raw one-at-a-time x1",
    },
    Compare {
        row: "gw-publish-8",
        base: "raw-publish-8",
        kind: Base::Raw,
        target: None,
        text: "publish x8 vs raw one-at-a-time x8",
    },
    Compare {
        row: "gw-publish-64",
        base: "raw-publish-64",
        kind: Base::Raw,
        target: Some(1.0),
        text: "publish x64 vs raw one-at-a-time x64",
    },
    Compare {
        row: "gw-publish-64",
        base: "raw-pipelined",
        kind: Base::Raw,
        target: Some(0.7),
        text: "publish x64 (single messages) vs raw pipelined confirms",
    },
    Compare {
        row: "gw-batch",
        base: "raw-pipelined",
        kind: Base::Raw,
        target: Some(0.8),
        text: "batch of 100 vs raw pipelined confirms",
    },
    Compare {
        row: "gw-next-auto",
        base: "raw-get",
        kind: Base::Raw,
        target: Some(0.9),
        text: "next?ack=auto vs raw basic.get no_ack",
    },
    Compare {
        row: "gw-lease-ack",
        base: "raw-get-ack",
        kind: Base::Raw,
        target: Some(0.8),
        text: "lease + ack vs raw basic.get + ack",
    },
    Compare {
        row: "gw-stream",
        base: "raw-consume",
        kind: Base::Raw,
        target: Some(0.9),
        text: "SSE stream vs raw basic.consume",
    },
    Compare {
        row: "gw-publish-64",
        base: "mgmt-publish",
        kind: Base::Management,
        target: Some(10.0),
        text: "publish x64 vs management publish x64",
    },
    Compare {
        row: "gw-next-auto",
        base: "mgmt-get",
        kind: Base::Management,
        target: None,
        text: "next?ack=auto x64 vs management get x64",
    },
];

/// Cores used by other processes above which a row is marked as disturbed.
const OTHER_LOAD_NOTE: f64 = 0.25;
const RSS_IDLE_MIB: f64 = 30.0;
const RSS_PEAK_MIB: f64 = 100.0;
const ADDED_P50_MS: f64 = 0.1;

fn find<'a>(rows: &'a [Row], id: &str) -> Option<&'a Row> {
    rows.iter().find(|row| row.spec.id == id)
}

fn rate(rows: &[Row], id: &str) -> Option<f64> {
    match &find(rows, id)?.outcome {
        Outcome::Measured(m) if m.msgs > 0 => Some(m.rate),
        _ => None,
    }
}

fn p50(rows: &[Row], id: &str) -> Option<f64> {
    match &find(rows, id)?.outcome {
        Outcome::Measured(m) => m.p50_ms,
        _ => None,
    }
}

fn ratio(rows: &[Row], compare: &Compare) -> Option<f64> {
    let base = rate(rows, compare.base)?;
    (base > 0.0).then(|| rate(rows, compare.row).unwrap_or(0.0) / base)
}

fn ratio_cell(rows: &[Row], id: &str, kind: Base) -> String {
    COMPARES
        .iter()
        .filter(|c| c.row == id && c.kind == kind)
        .map(|c| {
            let value = ratio(rows, c).map_or("n/a".to_owned(), |r| format!("{r:.2}x"));
            match c.target {
                Some(target) => format!("{value} (>= {target}x)"),
                None => value,
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "PASS",
        Some(false) => "FAIL",
        None => "n/a",
    }
}

fn rate_text(rate: f64) -> String {
    let whole = rate.round() as u64;
    let digits = whole.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ms(value: Option<f64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(v) if v < 1.0 => format!("{v:.3}"),
        Some(v) if v < 100.0 => format!("{v:.2}"),
        Some(v) => format!("{v:.0}"),
    }
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("n/a".to_owned(), |k| {
        format!("{:.1} MiB", k as f64 / 1024.0)
    })
}

const HEADERS: [&str; 11] = [
    "Scenario",
    "Clients",
    "msg/s",
    "p50 ms",
    "p99 ms",
    "non-2xx / errors",
    "vs raw (target)",
    "vs mgmt (target)",
    "gw CPU s",
    "gw CPU us/msg",
    "cores gw/broker/bench/other",
];

fn cells(rows: &[Row], row: &Row) -> Vec<String> {
    let mut out = vec![row.spec.label.to_owned(), row.spec.clients.to_string()];
    match &row.outcome {
        Outcome::Measured(m) => {
            let t = &m.tally;
            let mut errors: Vec<String> = t
                .non_2xx
                .iter()
                .map(|(status, n)| format!("{n}x{status}"))
                .collect();
            if t.failures > 0 {
                errors.push(format!("{} err", t.failures));
            }
            let gateway = row.spec.group == Group::Gateway;
            let core = |v: Option<f64>| v.map_or("-".to_owned(), |c| format!("{c:.2}"));
            out.extend([
                rate_text(m.rate),
                ms(m.p50_ms),
                ms(m.p99_ms),
                if errors.is_empty() {
                    "0".to_owned()
                } else {
                    errors.join(" ")
                },
                ratio_cell(rows, row.spec.id, Base::Raw),
                ratio_cell(rows, row.spec.id, Base::Management),
                if gateway {
                    m.gateway_cpu_s
                        .map_or("-".to_owned(), |s| format!("{s:.2}"))
                } else {
                    "-".to_owned()
                },
                match (gateway, m.gateway_cpu_s) {
                    (true, Some(cpu)) if m.msgs > 0 => format!("{:.0}", cpu * 1e6 / m.msgs as f64),
                    _ => "-".to_owned(),
                },
                format!(
                    "{}/{}/{}/{}",
                    if gateway {
                        core(m.gateway_cores)
                    } else {
                        "-".to_owned()
                    },
                    core(m.broker_cores),
                    core(m.bench_cores),
                    core(m.other_cores)
                ),
            ]);
        }
        Outcome::Skipped(_) => {
            out.extend(["skipped", "-", "-", "-", "-", "-", "-", "-", "-"].map(str::to_owned))
        }
        Outcome::Failed(_) => {
            out.extend(["FAILED", "-", "-", "-", "-", "-", "-", "-", "-"].map(str::to_owned))
        }
    }
    out
}

struct Target {
    text: String,
    value: String,
    wanted: String,
    ok: Option<bool>,
}

fn targets(rows: &[Row], summary: &Summary) -> Vec<Target> {
    let mut out = Vec::new();
    for compare in COMPARES.iter().filter(|c| c.target.is_some()) {
        let target = compare.target.unwrap_or_default();
        let value = ratio(rows, compare);
        out.push(Target {
            text: compare.text.to_owned(),
            value: value.map_or("n/a".to_owned(), |v| format!("{v:.2}x")),
            wanted: format!(">= {target}x"),
            ok: value.map(|v| v >= target),
        });
    }
    let added = p50(rows, "gw-publish-1")
        .zip(p50(rows, "raw-publish-1"))
        .map(|(g, r)| g - r);
    out.push(Target {
        text: "added p50 at 1 client (gateway p50 - raw p50)".to_owned(),
        value: added.map_or("n/a".to_owned(), |v| format!("{v:+.3} ms")),
        wanted: format!("<= {ADDED_P50_MS} ms"),
        ok: added.map(|v| v <= ADDED_P50_MS),
    });
    let idle = summary.idle_rss_kib.map(|k| k as f64 / 1024.0);
    out.push(Target {
        text: "gateway RSS idle (after start)".to_owned(),
        value: mib(summary.idle_rss_kib),
        wanted: format!("<= {RSS_IDLE_MIB} MiB"),
        ok: idle.map(|v| v <= RSS_IDLE_MIB),
    });
    let peak = summary.peak_rss_kib.map(|k| k as f64 / 1024.0);
    out.push(Target {
        text: "gateway RSS peak under load (VmHWM)".to_owned(),
        value: mib(summary.peak_rss_kib),
        wanted: format!("<= {RSS_PEAK_MIB} MiB"),
        ok: peak.map(|v| v <= RSS_PEAK_MIB),
    });
    let (mut errors, mut measured) = (0u64, false);
    for row in rows.iter().filter(|r| r.spec.group == Group::Gateway) {
        match &row.outcome {
            Outcome::Measured(m) => {
                measured = true;
                errors += m.tally.failures + m.tally.non_2xx.values().sum::<u64>();
            }
            Outcome::Failed(_) => {
                measured = true;
                errors += 1;
            }
            Outcome::Skipped(_) => {}
        }
    }
    out.push(Target {
        text: "gateway rows without errors or non-2xx".to_owned(),
        value: errors.to_string(),
        wanted: "0".to_owned(),
        ok: measured.then_some(errors == 0),
    });
    out
}

fn notes(rows: &[Row], summary: &Summary) -> Vec<String> {
    let mut out = Vec::new();
    for row in rows {
        let id = row.spec.id;
        match &row.outcome {
            Outcome::Skipped(why) => out.push(format!("{id}: skipped: {why}")),
            Outcome::Failed(why) => out.push(format!("{id}: FAILED: {why}")),
            Outcome::Measured(m) => {
                if m.drained_early {
                    out.push(format!(
                        "{id}: the queue ran empty after {:.2} s; rate = {} msgs / {:.2} s",
                        m.elapsed.as_secs_f64(),
                        m.msgs,
                        m.elapsed.as_secs_f64()
                    ));
                }
                if let Some(other) = m.other_cores.filter(|c| *c >= OTHER_LOAD_NOTE) {
                    out.push(format!(
                        "{id}: other processes used {other:.2} cores during this row (iowait {:.2} cores): the numbers are disturbed",
                        m.iowait_cores.unwrap_or(0.0)
                    ));
                }
                if m.msgs == 0 {
                    out.push(format!(
                        "{id}: no message went through in the measured window"
                    ));
                }
                if m.tally.reconnects > 0 {
                    out.push(format!(
                        "{id}: the server closed keep-alive connections {} times (clients reconnected)",
                        m.tally.reconnects
                    ));
                }
                for sample in &m.tally.samples {
                    out.push(format!("{id}: error: {sample}"));
                }
            }
        }
    }
    if !summary.gateway_alive {
        out.push("the gateway process was gone at the end of the run".to_owned());
    }
    out
}

fn summary_lines(summary: &Summary) -> Vec<String> {
    vec![
        format!(
            "gateway RSS: idle {} after start, peak {} (VmHWM), {} at the end",
            mib(summary.idle_rss_kib),
            mib(summary.peak_rss_kib),
            mib(summary.end_rss_kib)
        ),
        format!(
            "gateway CPU: {} s during the scenarios, {} s in total since it started",
            summary
                .run_cpu_s
                .map_or("n/a".to_owned(), |s| format!("{s:.2}")),
            summary
                .total_cpu_s
                .map_or("n/a".to_owned(), |s| format!("{s:.2}"))
        ),
        format!(
            "scenarios took {:.0} s; load average {} before, {} after; {} cores",
            summary.wall.as_secs_f64(),
            summary.load_before.as_deref().unwrap_or("n/a"),
            summary.load_after.as_deref().unwrap_or("n/a"),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        ),
    ]
}

pub fn render(rows: &[Row], summary: &Summary) -> Rendered {
    let table: Vec<Vec<String>> = rows.iter().map(|row| cells(rows, row)).collect();
    let targets = targets(rows, summary);
    let notes = notes(rows, summary);
    let summary_lines = summary_lines(summary);

    // Aligned text.
    let mut widths: Vec<usize> = HEADERS.iter().map(|h| h.len()).collect();
    for line in &table {
        for (i, cell) in line.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let pad = |i: usize, text: &str| {
        let fill = widths[i].saturating_sub(text.chars().count());
        if i == 0 {
            format!("{text}{}", " ".repeat(fill))
        } else {
            format!("{}{text}", " ".repeat(fill))
        }
    };
    let mut plain = String::new();
    let header: Vec<String> = HEADERS.iter().enumerate().map(|(i, h)| pad(i, h)).collect();
    let _ = writeln!(plain, "\n{}", header.join("  "));
    let _ = writeln!(
        plain,
        "{}",
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  ")
    );
    let mut previous = None;
    for (line, row) in table.iter().zip(rows) {
        if previous.is_some_and(|group| group != row.spec.group) {
            let _ = writeln!(plain);
        }
        previous = Some(row.spec.group);
        let cells: Vec<String> = line.iter().enumerate().map(|(i, c)| pad(i, c)).collect();
        let _ = writeln!(plain, "{}", cells.join("  "));
    }
    let _ = writeln!(plain, "\nTargets");
    let text_width = targets.iter().map(|t| t.text.len()).max().unwrap_or(0);
    for t in &targets {
        let _ = writeln!(
            plain,
            "  {:<text_width$}  {:>10}  {:<12}  {}",
            t.text,
            t.value,
            t.wanted,
            verdict(t.ok)
        );
    }
    let _ = writeln!(plain);
    for line in &summary_lines {
        let _ = writeln!(plain, "{line}");
    }
    if !notes.is_empty() {
        let _ = writeln!(plain, "\nNotes");
        for note in &notes {
            let _ = writeln!(plain, "  {note}");
        }
    }

    // Markdown.
    let mut markdown = String::new();
    let _ = writeln!(markdown, "| {} |", HEADERS.join(" | "));
    let _ = writeln!(
        markdown,
        "|{}|",
        HEADERS
            .iter()
            .enumerate()
            .map(|(i, _)| if i == 0 { "---" } else { "---:" })
            .collect::<Vec<_>>()
            .join("|")
    );
    for line in &table {
        let _ = writeln!(markdown, "| {} |", line.join(" | "));
    }
    let _ = writeln!(
        markdown,
        "\n| Target | Measured | Wanted | |\n|---|---:|---|---|"
    );
    for t in &targets {
        let _ = writeln!(
            markdown,
            "| {} | {} | {} | {} |",
            t.text,
            t.value,
            t.wanted.replace(">=", "≥").replace("<=", "≤"),
            verdict(t.ok)
        );
    }
    let _ = writeln!(markdown);
    for line in &summary_lines {
        let _ = writeln!(markdown, "- {line}");
    }
    for note in &notes {
        let _ = writeln!(markdown, "- {}", note.replace('|', "\\|"));
    }
    Rendered { plain, markdown }
}
