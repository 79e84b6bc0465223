//! One timestamped line per event on stderr: for logs, CI and `--output json`.

use std::io::Write;
use std::time::SystemTime;

use crate::saga::{Phase, Reporter, StepEvent};

pub struct LineReporter;

fn line(text: &str) {
    let ts = humantime::format_rfc3339_seconds(SystemTime::now());
    // One write_all of a whole line so concurrent steps do not interleave within a line.
    let _ = std::io::stderr().write_all(format!("{ts} {text}\n").as_bytes());
}

impl Reporter for LineReporter {
    fn step(&self, phase: Phase, step: &str, event: &StepEvent) {
        let verb = match phase {
            Phase::Execute => "",
            Phase::Rollback => "rollback ",
        };
        let text = match event {
            StepEvent::Started { attempt } => format!("{verb}{step}: started (attempt {attempt})"),
            StepEvent::Retrying {
                attempt,
                error,
                delay,
            } => {
                format!(
                    "{verb}{step}: attempt {attempt} failed ({error}); retrying in {:.1}s",
                    delay.as_secs_f64()
                )
            }
            StepEvent::Done { elapsed } => {
                format!("{verb}{step}: done in {:.1}s", elapsed.as_secs_f64())
            }
            StepEvent::Failed { error } => format!("{verb}{step}: FAILED: {error}"),
        };
        line(&text);
    }

    fn message(&self, message: &str) {
        line(message);
    }
}
