//! The results and their output: a [`Row`] of samples per metric and
//! daemon, which way it is better and its [`Goal`]; [`print_and_save`]
//! prints a scenario's table, writes its JSON under `<target>/bench/` and
//! adds its rows to the closing [`Summary`].

use super::daemons::Daemon;
use super::target_dir;
use crate::Result;

/// Median, min and max of `v` (sorted in place).
pub(super) fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return (0.0, 0.0, 0.0);
    }
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (median, v[0], v[n - 1])
}

/// Which way a metric improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Better {
    /// Times, memory.
    Lower,
    /// Throughputs.
    Higher,
}

/// A target for the ratio berth/containerd.
#[derive(Debug, Clone, Copy)]
pub(super) enum Goal {
    /// Ratio at most this.
    AtMost(f64),
    /// Ratio at least this.
    AtLeast(f64),
}

impl Goal {
    fn met(self, ratio: f64) -> bool {
        match self {
            Goal::AtMost(g) => ratio > 0.0 && ratio <= g,
            Goal::AtLeast(g) => ratio >= g,
        }
    }

    fn text(self) -> String {
        match self {
            Goal::AtMost(g) => format!("≤ {g}"),
            Goal::AtLeast(g) => format!("≥ {g}"),
        }
    }
}

/// One row of the results table.
pub(super) struct Row {
    metric: String,
    unit: &'static str,
    better: Better,
    goal: Option<Goal>,
    pub(super) berth: Vec<f64>,
    pub(super) containerd: Vec<f64>,
    /// Not measured, and why (shown instead of the figures).
    pub(super) skipped: Option<String>,
    /// Why there is no containerd figure, shown in its column.
    pub(super) no_baseline: Option<String>,
}

impl Row {
    pub(super) fn new(metric: impl Into<String>, unit: &'static str, better: Better) -> Row {
        Row {
            metric: metric.into(),
            unit,
            better,
            goal: None,
            berth: Vec::new(),
            containerd: Vec::new(),
            skipped: None,
            no_baseline: None,
        }
    }

    pub(super) fn goal(mut self, goal: Goal) -> Row {
        self.goal = Some(goal);
        self
    }

    pub(super) fn push(&mut self, d: &Daemon, v: f64) {
        if d.is_berth() {
            self.berth.push(v)
        } else {
            self.containerd.push(v)
        }
    }
}

/// Every scenario's rows, for the closing summary.
#[derive(Default)]
pub(super) struct Summary {
    pub(super) lines: Vec<String>,
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub(super) fn print_and_save(
    scenario: &str,
    rows: &mut [Row],
    summary: &mut Summary,
) -> Result<()> {
    println!(
        "{:<40} {:>6} {:>10} {:>19} {:>10} {:>19} {:>7} {:>7}",
        "metric", "better", "berth", "min-max", "containerd", "min-max", "ratio", "goal"
    );
    let mut json = Vec::new();
    for r in rows.iter_mut() {
        let better = match r.better {
            Better::Lower => "lower",
            Better::Higher => "higher",
        };
        if let Some(reason) = &r.skipped {
            println!("{:<40} {better:>6} skipped: {reason}", r.metric);
            summary.lines.push(format!(
                "| {scenario} | {} | {better} | skipped: {reason} | – | – | – |",
                r.metric
            ));
            json.push(serde_json::json!({
                "metric": r.metric, "unit": r.unit, "better": better, "skipped": reason,
            }));
            continue;
        }
        let (bm, bmin, bmax) = stats(&mut r.berth);
        let baseline = !r.containerd.is_empty();
        let (cm, cmin, cmax) = stats(&mut r.containerd);
        let ratio = if cm > 0.0 { bm / cm } else { 0.0 };
        let none = r.no_baseline.clone().unwrap_or_else(|| "-".into());
        let goal = r.goal.map(|g| {
            format!(
                "{} {}",
                g.text(),
                if g.met(ratio) { "met" } else { "missed" }
            )
        });
        let (c_med, c_range, ratio_s) = if baseline {
            (
                format!("{} {}", fmt_num(cm), r.unit),
                format!("{}-{}", fmt_num(cmin), fmt_num(cmax)),
                format!("{ratio:.2}"),
            )
        } else {
            (none.clone(), "-".into(), "-".into())
        };
        println!(
            "{:<40} {:>6} {:>10} {:>19} {:>10} {:>19} {:>7} {}",
            r.metric,
            better,
            format!("{} {}", fmt_num(bm), r.unit),
            format!("{}-{}", fmt_num(bmin), fmt_num(bmax)),
            c_med,
            c_range,
            ratio_s,
            goal.clone().unwrap_or_default(),
        );
        summary.lines.push(format!(
            "| {scenario} | {} | {better} | {} {} ({}–{}) | {} | {} | {} |",
            r.metric,
            fmt_num(bm),
            r.unit,
            fmt_num(bmin),
            fmt_num(bmax),
            if baseline {
                format!(
                    "{} {} ({}–{})",
                    fmt_num(cm),
                    r.unit,
                    fmt_num(cmin),
                    fmt_num(cmax)
                )
            } else {
                r.no_baseline.clone().unwrap_or_else(|| "–".into())
            },
            if baseline { ratio_s } else { "–".into() },
            goal.unwrap_or_else(|| "–".into()),
        ));
        json.push(serde_json::json!({
            "metric": r.metric, "unit": r.unit, "better": better,
            "berth": {"median": bm, "min": bmin, "max": bmax, "samples": r.berth},
            "containerd": if baseline {
                serde_json::json!({"median": cm, "min": cmin, "max": cmax, "samples": r.containerd})
            } else {
                serde_json::Value::Null
            },
            "ratio": if baseline { serde_json::json!(ratio) } else { serde_json::Value::Null },
            "no_baseline": r.no_baseline,
            "goal": r.goal.map(Goal::text),
            "goal_met": r.goal.map(|g| g.met(ratio)),
        }));
    }
    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let path = out.join(format!("{scenario}.json"));
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&json).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    println!("(written to {})", path.display());
    Ok(())
}
