//! What the fault matrices share: the six faults, a cell's outcome, and the table they print.

use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    CrashBefore,
    CrashAfter,
    Transient,
    Permanent,
    Twice,
    UndoTwice,
}

impl Fault {
    pub const ALL: [Fault; 6] = [
        Fault::CrashBefore,
        Fault::CrashAfter,
        Fault::Transient,
        Fault::Permanent,
        Fault::Twice,
        Fault::UndoTwice,
    ];

    /// Where a crash fault strikes: before the side effect or after it.
    pub fn crash_point(self) -> &'static str {
        match self {
            Fault::CrashBefore => "before",
            _ => "after",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Fault::CrashBefore => "crash before",
            Fault::CrashAfter => "crash after",
            Fault::Transient => "transient",
            Fault::Permanent => "permanent",
            Fault::Twice => "step twice",
            Fault::UndoTwice => "undo twice",
        }
    }
}

pub fn check(ok: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(why()) }
}

/// A check's result and the seconds it took.
pub type Outcome = (Result<(), String>, f64);

pub async fn timed<F: std::future::Future<Output = Result<(), String>>>(f: F) -> Outcome {
    let t0 = Instant::now();
    let r = f.await;
    (r, t0.elapsed().as_secs_f64())
}

/// One step × one fault. `None`: not run (the resume of "undo twice", which only a rollback
/// has; or a rollback cell left out of an on-demand run).
pub struct Cell {
    pub step: String,
    pub fault: Fault,
    pub resume: Option<Outcome>,
    pub rollback: Option<Outcome>,
}

impl Cell {
    pub fn passed(&self) -> bool {
        [&self.resume, &self.rollback]
            .iter()
            .all(|o| o.as_ref().is_none_or(|(r, _)| r.is_ok()))
    }
}

fn mark(o: &Option<Outcome>) -> String {
    match o {
        None => "n/a".into(),
        Some((Ok(()), s)) => format!("pass {s:.1}s"),
        Some((Err(_), s)) => format!("FAIL {s:.1}s"),
    }
}

/// The table: a row per cell, then every failure with its reason, then `notes` (how the
/// cells were run, so the times can be read).
pub fn table(flow: &str, cells: &[Cell], total: f64, notes: &[String]) -> String {
    let mut t = format!(
        "fault matrix: {flow} ({} cells, {total:.0} s)\n| step | fault | resume | rollback |\n|---|---|---|---|\n",
        cells.len()
    );
    for c in cells {
        t += &format!(
            "| {} | {} | {} | {} |\n",
            c.step,
            c.fault.label(),
            mark(&c.resume),
            mark(&c.rollback)
        );
    }
    for c in cells {
        for (what, o) in [("resume", &c.resume), ("rollback", &c.rollback)] {
            if let Some((Err(e), _)) = o {
                t += &format!("FAIL {} / {} / {what}: {e}\n", c.step, c.fault.label());
            }
        }
    }
    for n in notes {
        t += &format!("{n}\n");
    }
    t
}

/// Prints the table and appends it to `DBCTL_MATRIX_OUT` when set (the script collects every
/// flow's table in one file).
pub fn report(table: &str) {
    println!("{table}");
    if let Ok(path) = std::env::var("DBCTL_MATRIX_OUT") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        writeln!(f, "{table}").unwrap();
    }
}
