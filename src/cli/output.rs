//! Printing results: JSON documents for scripts, aligned text for people.

use serde::Serialize;

use crate::journal::{RunRow, StepRow, format_ms};
use crate::operations::App;

/// Prints `value` as JSON when asked for, otherwise the text `render` returns.
pub fn emit<T: Serialize>(app: &App, value: &T, render: impl FnOnce() -> String) {
    if app.json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("output serializes")
        );
    } else {
        let text = render();
        if !text.is_empty() {
            println!("{}", text.trim_end());
        }
    }
}

/// A run with its steps: the JSON shape of `create`, `resume`, `rollback`, `status RUN`.
#[derive(Serialize)]
pub struct RunView {
    pub run: RunRow,
    pub steps: Vec<StepRow>,
}

pub fn duration_ms(s: &StepRow) -> Option<i64> {
    Some(s.finished_at? - s.started_at?)
}

/// A text table: columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let fmt = |cells: Vec<String>| {
        let line: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        line.join("  ").trim_end().to_string()
    };
    let mut out = vec![fmt(header.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.iter().map(|r| fmt(r.clone())));
    out.join("\n") + "\n"
}

pub fn render_run(v: &RunView) -> String {
    let r = &v.run;
    let mut out = format!(
        "run {}  {}  {}  (instance {}, started {})\n",
        r.id,
        r.operation,
        r.shown_state,
        r.instance_id,
        format_ms(r.created_at)
    );
    if r.stalled {
        out += &format!(
            "the process driving it is gone (journal says {}); continue with: dbctl resume {}\n",
            r.state, r.id
        );
    }
    if let Some(e) = &r.error {
        out += &format!("reason: {e}\n");
    }
    let rows: Vec<Vec<String>> = v
        .steps
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.state.to_string(),
                s.attempts.to_string(),
                duration_ms(s)
                    .map(|d| format!("{:.1}s", d as f64 / 1000.0))
                    .unwrap_or_default(),
                s.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out + &table(&["STEP", "STATE", "ATTEMPTS", "TIME", "ERROR"], &rows)
}
