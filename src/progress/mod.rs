//! Progress renderers for the engine's events: a live view on a terminal, timestamped lines
//! otherwise. Both render the same [`StepEvent`]s, so what a person sees and what a CI log
//! records never disagree.

mod lines;
mod terminal;

use std::io::IsTerminal;
use std::sync::Arc;

pub use lines::LineReporter;
pub use terminal::TerminalReporter;

use crate::saga::Reporter;

/// The renderer for this process: the live view when stderr is a terminal and the output is
/// meant for a person, plain lines on stderr otherwise (stdout stays free for `--output json`).
pub fn reporter(for_humans: bool) -> Arc<dyn Reporter> {
    if for_humans && std::io::stderr().is_terminal() {
        Arc::new(TerminalReporter::new())
    } else {
        Arc::new(LineReporter)
    }
}
