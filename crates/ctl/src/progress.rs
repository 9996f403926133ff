//! Progress of pulls, pushes, imports, exports and fetches, as ctr draws
//! its pull progress: one bar per object (`layer-sha256:…  downloading
//! |+++---| 1.2 MiB/2.0 MiB`) under each other, and a last line with the
//! elapsed time and the bytes done in all. Bars are drawn (by `indicatif`,
//! on stderr) only when both stdout and stderr are terminals; otherwise
//! each finished step is one plain line on stderr, for logs and scripts.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Events that end a row: printed as a plain line when there are no bars.
const FINAL_EVENTS: [&str; 7] = [
    "complete", "exists", "unpacked", "saved", "pushed", "done", "fetched",
];

/// One progress report: what happened to which object, bytes done of all.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    /// What happened (`downloading`, `complete`, `unpacked`, ...).
    pub(crate) event: String,
    /// The object (`layer-sha256:…`, an image name).
    pub(crate) name: String,
    /// Bytes done.
    pub(crate) progress: i64,
    /// Bytes in all (0 when unknown).
    pub(crate) total: i64,
}

/// One object's row.
struct Row {
    bar: Option<ProgressBar>,
    event: String,
    progress: u64,
    total: u64,
}

/// The rows of one transfer, drawn as bars or printed as final lines.
pub(crate) struct ProgressView {
    multi: Option<MultiProgress>,
    summary: Option<ProgressBar>,
    rows: HashMap<String, Row>,
    started: Instant,
}

impl ProgressView {
    /// A view drawing bars when stdout and stderr are terminals.
    pub(crate) fn new() -> ProgressView {
        let tty = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
        ProgressView::with_bars(tty)
    }

    /// A view that draws bars (`bars`) or prints final lines.
    pub(crate) fn with_bars(bars: bool) -> ProgressView {
        let (multi, summary) = if bars {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let summary = multi.add(ProgressBar::new_spinner());
            summary.set_style(
                ProgressStyle::with_template("{msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            (Some(multi), Some(summary))
        } else {
            (None, None)
        };
        ProgressView {
            multi,
            summary,
            rows: HashMap::new(),
            started: Instant::now(),
        }
    }

    /// Takes one report in.
    pub(crate) fn update(&mut self, p: Report) {
        let progress = u64::try_from(p.progress).unwrap_or(0);
        let total = u64::try_from(p.total).unwrap_or(0);
        let row = self.rows.entry(p.name.clone()).or_insert_with(|| Row {
            bar: None,
            event: String::new(),
            progress: 0,
            total: 0,
        });
        // Reports may come late or out of order: never go backwards.
        row.progress = row.progress.max(progress);
        row.total = row.total.max(total);
        let finished = FINAL_EVENTS.contains(&p.event.as_str());
        let repeated = row.event == p.event;
        row.event.clone_from(&p.event);
        match (&self.multi, &self.summary) {
            (Some(multi), Some(summary)) => {
                let bar = row.bar.get_or_insert_with(|| {
                    let bar = multi.insert_before(summary, ProgressBar::new(0));
                    bar.set_prefix(short(&p.name));
                    bar
                });
                bar.set_style(style(row.total > 0));
                bar.set_length(row.total);
                bar.set_position(row.progress);
                bar.set_message(p.event.clone());
                if finished {
                    // Later events (a layer unpacked after it downloaded)
                    // still update the row: bars end together in finish().
                    bar.set_position(row.total.max(row.progress));
                }
                summary.set_message(self.summary_line());
                summary.tick();
            }
            _ => {
                if finished && !repeated {
                    eprintln!(
                        "{:<24} {:<10} {}",
                        short(&p.name),
                        p.event,
                        crate::format::size(p.total)
                    );
                }
            }
        }
    }

    /// Bytes done and in all, over the layers (what takes the time).
    fn totals(&self) -> (u64, u64) {
        self.rows
            .iter()
            .filter(|(name, _)| name.starts_with("layer-"))
            .fold((0, 0), |(d, t), (_, r)| (d + r.progress, t + r.total))
    }

    /// ctr's last line: `elapsed: 1.2 s   total: 3.0 MiB / 4.1 MiB (2.5 MiB/s)`.
    fn summary_line(&self) -> String {
        let (done, all) = self.totals();
        format!(
            "elapsed: {:<8} total: {} / {} ({}/s)",
            format!("{:.1} s", self.started.elapsed().as_secs_f64()),
            crate::format::size(to_i64(done)),
            crate::format::size(to_i64(all)),
            crate::format::size(self.rate(done)),
        )
    }

    /// Bytes per second since the start, whole: fine for a progress line.
    fn rate(&self, done: u64) -> i64 {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
        let rate = (done as f64 / secs) as i64;
        rate
    }

    /// Draws the final picture and leaves it on the terminal.
    pub(crate) fn finish(&mut self) {
        if let Some(summary) = &self.summary {
            summary.finish_with_message(self.summary_line());
        }
        for row in self.rows.values() {
            if let Some(bar) = &row.bar
                && !bar.is_finished()
            {
                bar.finish();
            }
        }
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A row's style: a bar with byte counts when the size is known, the
/// event alone otherwise (an image name being resolved or saved).
fn style(sized: bool) -> ProgressStyle {
    let template = if sized {
        "{prefix:<32} {msg:<12} |{bar:40}| {bytes:>10} / {total_bytes}"
    } else {
        "{prefix:<32} {msg:<12}"
    };
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("++-")
}

/// `layer-sha256:0123456789ab…` as `layer-0123456789ab`; other names cut.
pub(crate) fn short(name: &str) -> String {
    match name.split_once("sha256:") {
        Some((kind, hex)) => format!("{kind}{}", &hex[..hex.len().min(12)]),
        None => name.chars().take(60).collect(),
    }
}

/// A progress handler for berth-client's client-side transfers, feeding
/// a view the caller finishes.
pub(crate) fn client_side() -> (berth_client::ProgressHandler, Arc<Mutex<ProgressView>>) {
    let view = Arc::new(Mutex::new(ProgressView::new()));
    let fed = view.clone();
    let handler = berth_client::ProgressHandler::new(move |p| {
        if let Ok(mut v) = fed.lock() {
            v.update(Report {
                event: p.event,
                name: p.name,
                progress: p.progress,
                total: p.total,
            });
        }
    });
    (handler, view)
}

/// Finishes a shared view.
pub(crate) fn finish(view: &Arc<Mutex<ProgressView>>) {
    if let Ok(mut v) = view.lock() {
        v.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::{ProgressView, Report, short};

    fn report(event: &str, name: &str, progress: i64, total: i64) -> Report {
        Report {
            event: event.into(),
            name: name.into(),
            progress,
            total,
        }
    }

    #[test]
    fn names_are_shortened_as_ctr_does() {
        assert_eq!(
            short("layer-sha256:0123456789abcdef0123"),
            "layer-0123456789ab"
        );
        assert_eq!(
            short("docker.io/library/busybox:latest"),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn rows_never_go_backwards_and_layers_add_up() {
        let mut v = ProgressView::with_bars(false);
        v.update(report("downloading", "layer-sha256:aa", 50, 100));
        v.update(report("downloading", "layer-sha256:aa", 20, 100));
        v.update(report("downloading", "layer-sha256:bb", 10, 300));
        v.update(report("resolved", "docker.io/x:1", 0, 0));
        assert_eq!(v.totals(), (60, 400));
        v.update(report("complete", "layer-sha256:bb", 300, 300));
        assert_eq!(v.totals(), (350, 400));
        v.finish();
    }

    #[test]
    fn bars_count_the_same_and_end_together() {
        // Drawn to stderr, hidden when it is not a terminal (as here).
        let mut v = ProgressView::with_bars(true);
        v.update(report("downloading", "layer-sha256:aa", 5, 10));
        v.update(report("complete", "layer-sha256:aa", 10, 10));
        v.update(report("unpacked", "layer-sha256:aa", 10, 10));
        assert_eq!(v.totals(), (10, 10));
        let bar = v.rows["layer-sha256:aa"].bar.clone();
        assert!(
            bar.as_ref()
                .is_some_and(|b| b.position() == 10 && !b.is_finished())
        );
        v.finish();
        assert!(bar.is_some_and(|b| b.is_finished()));
    }
}
