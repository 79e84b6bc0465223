//! The engine's event stream: each step event goes to the journal's event log and to a
//! [`Reporter`] (the terminal view, plain lines, or nothing).

use std::sync::Arc;
use std::time::Duration;

use crate::journal::Journal;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Execute,
    Rollback,
}

/// What happened to a step; renderers turn these into spinners or lines.
#[derive(Debug, Clone)]
pub enum StepEvent {
    Started {
        attempt: u32,
    },
    Retrying {
        attempt: u32,
        error: String,
        delay: Duration,
    },
    Done {
        elapsed: Duration,
    },
    Failed {
        error: String,
    },
}

/// Renders engine events for a person or a script. Implementations must be cheap: they are
/// called from step tasks.
pub trait Reporter: Send + Sync {
    fn step(&self, phase: Phase, step: &str, event: &StepEvent);
    fn message(&self, message: &str);
}

pub struct RunLog {
    journal: Arc<Journal>,
    run_id: String,
    reporter: Arc<dyn Reporter>,
}

impl RunLog {
    pub fn new(journal: Arc<Journal>, run_id: &str, reporter: Arc<dyn Reporter>) -> RunLog {
        RunLog {
            journal,
            run_id: run_id.to_string(),
            reporter,
        }
    }

    pub fn step(&self, phase: Phase, step: &str, event: StepEvent) {
        let verb = match phase {
            Phase::Execute => "execute",
            Phase::Rollback => "rollback",
        };
        let (level, text) = match &event {
            StepEvent::Started { attempt } => {
                ("info", format!("{verb} started (attempt {attempt})"))
            }
            StepEvent::Retrying {
                attempt,
                error,
                delay,
            } => (
                "warn",
                format!(
                    "{verb} attempt {attempt} failed, retrying in {} ms: {error}",
                    delay.as_millis()
                ),
            ),
            StepEvent::Done { elapsed } => {
                ("info", format!("{verb} done in {} ms", elapsed.as_millis()))
            }
            StepEvent::Failed { error } => ("error", format!("{verb} failed: {error}")),
        };
        // The event log is diagnostics: losing a line must not fail the step.
        let _ = self.journal.event(&self.run_id, level, Some(step), &text);
        self.reporter.step(phase, step, &event);
    }

    pub fn message(&self, level: &str, message: &str) {
        let _ = self.journal.event(&self.run_id, level, None, message);
        self.reporter.message(message);
    }
}
