//! Step timings of one CRI call, for its debug-level log line (where the
//! time of RunPodSandbox or StopPodSandbox went; see docs/perf-cri.md).

use std::fmt;
use std::time::{Duration, Instant};

/// Durations of the steps of one call, in the order they were taken.
#[derive(Debug, Clone)]
pub(crate) struct Steps {
    start: Instant,
    last: Instant,
    done: Vec<(&'static str, Duration)>,
}

impl Steps {
    /// Starts timing now.
    pub(crate) fn start() -> Steps {
        let now = Instant::now();
        Steps {
            start: now,
            last: now,
            done: Vec::new(),
        }
    }

    /// Ends step `name`: the time since the previous mark (or the start).
    pub(crate) fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.done.push((name, now - self.last));
        self.last = now;
    }

    /// Adds the steps another timer took (a branch that ran beside this
    /// one, its step names its own); this timer's next mark counts from
    /// now.
    pub(crate) fn merge(&mut self, other: &Steps) {
        self.done.extend(other.done.iter().copied());
        self.last = Instant::now();
    }

    /// The time since the start.
    pub(crate) fn total(&self) -> Duration {
        self.start.elapsed()
    }
}

impl fmt::Display for Steps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, d)) in self.done.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{name}={:.3}ms", d.as_secs_f64() * 1000.0)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_print_in_order_in_milliseconds() {
        let mut s = Steps::start();
        s.mark("a");
        let mut b = Steps::start();
        b.mark("b");
        s.merge(&b);
        s.mark("c");
        let text = s.to_string();
        let names: Vec<&str> = text
            .split(' ')
            .map(|p| p.split('=').next().unwrap_or_default())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(text.split(' ').all(|p| p.ends_with("ms")), "{text}");
    }
}
