//! The live terminal view: one line per step with a spinner, elapsed time and attempt.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::saga::{Phase, Reporter, StepEvent};

pub struct TerminalReporter {
    multi: MultiProgress,
    bars: Mutex<HashMap<(bool, String), ProgressBar>>,
}

impl TerminalReporter {
    pub fn new() -> Self {
        TerminalReporter {
            multi: MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn bar(&self, phase: Phase, step: &str) -> ProgressBar {
        let rollback = phase == Phase::Rollback;
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        bars.entry((rollback, step.to_string()))
            .or_insert_with(|| {
                let style =
                    ProgressStyle::with_template("{spinner:.cyan} {prefix:<34} {elapsed:>4} {msg}")
                        .expect("static template");
                let pb = self.multi.add(ProgressBar::new_spinner().with_style(style));
                pb.set_prefix(if rollback {
                    format!("undo {step}")
                } else {
                    step.to_string()
                });
                pb.enable_steady_tick(Duration::from_millis(120));
                pb
            })
            .clone()
    }
}

impl Default for TerminalReporter {
    fn default() -> Self {
        Self::new()
    }
}

impl Reporter for TerminalReporter {
    fn step(&self, phase: Phase, step: &str, event: &StepEvent) {
        let pb = self.bar(phase, step);
        match event {
            StepEvent::Started { attempt } if *attempt > 1 => {
                pb.set_message(format!("attempt {attempt}"))
            }
            StepEvent::Started { .. } => pb.set_message("running"),
            StepEvent::Retrying {
                attempt,
                error,
                delay,
            } => pb.set_message(format!(
                "attempt {attempt} failed, retry in {:.1}s: {error}",
                delay.as_secs_f64()
            )),
            StepEvent::Done { .. } => pb.finish_with_message("✔ done"),
            StepEvent::Failed { error } => pb.abandon_with_message(format!("✖ {error}")),
        }
    }

    fn message(&self, message: &str) {
        let _ = self.multi.println(message);
    }
}
