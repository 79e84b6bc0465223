//! Fault injection in the real binary, for crash and retry tests.
//!
//! `DBCTL_FAULTS` holds `;`-separated rules `STEP@POINT=ACTION[*N]`:
//! - POINT: `before` (intent journaled, before the side effect), `after` (side effect done,
//!   before its outputs are journaled), `undo-before`, `undo-after` (the same for rollback), or
//!   a point a step names inside itself (`provision.vm.primary@qemu-started=crash`).
//! - ACTION: `crash` (SIGKILL to ourselves: no cleanup, no journal write, like `kill -9`),
//!   `transient` or `permanent` (the step attempt fails with that kind of error), or `repeat`
//!   (at `after` or `undo-after` only: the step's side effect, or its undo, runs a second time
//!   at once, as when a reply was lost and the call retried; the second result is the one kept).
//! - `*N`: fire only on attempts 1..=N (attempts as counted in the journal); without it, every
//!   attempt.
//!
//! Example: `DBCTL_FAULTS='provision.vm.primary@after=crash;setup.primary@before=transient*2'`.

use super::StepError;

pub const ENV: &str = "DBCTL_FAULTS";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultPoint {
    Before,
    After,
    UndoBefore,
    UndoAfter,
    /// A point a step names itself, e.g. `qemu-started` inside `provision.vm.*`.
    Custom(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Crash,
    Transient,
    Permanent,
    Repeat,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    step: String,
    point: FaultPoint,
    action: Action,
    up_to_attempt: Option<u32>,
}

/// The parsed rules; empty (and free) unless `DBCTL_FAULTS` is set.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    rules: Vec<Rule>,
}

impl FaultPlan {
    /// The plan `DBCTL_FAULTS` asks for, in a build with the `faults` feature; elsewhere the
    /// variable is ignored (with a warning), so no production run can be made to crash by it.
    pub fn from_env() -> Result<FaultPlan, String> {
        FaultPlan::from_var(std::env::var(ENV).ok().as_deref())
    }

    fn from_var(value: Option<&str>) -> Result<FaultPlan, String> {
        match value {
            #[cfg(feature = "faults")]
            Some(s) => FaultPlan::parse(s),
            #[cfg(not(feature = "faults"))]
            Some(_) => {
                eprintln!("warning: {ENV} is ignored: this build has no fault injection");
                Ok(FaultPlan::default())
            }
            None => Ok(FaultPlan::default()),
        }
    }

    pub fn parse(spec: &str) -> Result<FaultPlan, String> {
        let mut rules = Vec::new();
        for raw in spec.split(';').map(str::trim).filter(|r| !r.is_empty()) {
            let bad = |why: &str| format!("{ENV}: rule {raw:?}: {why}");
            let (step, rest) = raw
                .split_once('@')
                .ok_or_else(|| bad("expected STEP@POINT=ACTION"))?;
            let (point, action) = rest
                .split_once('=')
                .ok_or_else(|| bad("expected POINT=ACTION"))?;
            let (action, count) = match action.split_once('*') {
                Some((a, n)) => (
                    a,
                    Some(n.parse::<u32>().map_err(|_| bad("*N needs a number"))?),
                ),
                None => (action, None),
            };
            let point = match point {
                "before" => FaultPoint::Before,
                "after" => FaultPoint::After,
                "undo-before" => FaultPoint::UndoBefore,
                "undo-after" => FaultPoint::UndoAfter,
                custom
                    if !custom.is_empty()
                        && custom.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') =>
                {
                    FaultPoint::Custom(custom.to_string())
                }
                _ => {
                    return Err(bad(
                        "POINT is before, after, undo-before, undo-after or a step's own point name",
                    ));
                }
            };
            let action = match action {
                "crash" => Action::Crash,
                "transient" => Action::Transient,
                "permanent" => Action::Permanent,
                "repeat" => Action::Repeat,
                _ => return Err(bad("ACTION is crash, transient, permanent or repeat")),
            };
            if action == Action::Repeat
                && !matches!(point, FaultPoint::After | FaultPoint::UndoAfter)
            {
                return Err(bad(
                    "repeat is a point after the side effect: after or undo-after",
                ));
            }
            rules.push(Rule {
                step: step.to_string(),
                point,
                action,
                up_to_attempt: count,
            });
        }
        Ok(FaultPlan { rules })
    }

    fn matching(
        &self,
        step: &str,
        point: &FaultPoint,
        attempt: u32,
    ) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(move |r| {
            r.step == step && r.point == *point && r.up_to_attempt.is_none_or(|n| attempt <= n)
        })
    }

    /// Whether the side effect (or undo) just done at `point` is to be done once more.
    pub fn repeats(&self, step: &str, point: &FaultPoint, attempt: u32) -> bool {
        self.matching(step, point, attempt)
            .any(|r| r.action == Action::Repeat)
    }

    /// Fires the matching rule, if any: crashes the process or returns the injected error.
    pub fn fire(&self, step: &str, point: &FaultPoint, attempt: u32) -> Result<(), StepError> {
        let Some(rule) = self
            .matching(step, point, attempt)
            .find(|r| r.action != Action::Repeat)
        else {
            return Ok(());
        };
        let what = format!("injected fault at {step}@{point:?} (attempt {attempt})");
        match rule.action {
            Action::Crash => crash_now(&what),
            Action::Transient => Err(StepError::Transient(what)),
            Action::Permanent => Err(StepError::Permanent(what)),
            Action::Repeat => unreachable!("repeat rules are asked for with repeats()"),
        }
    }
}

/// Dies like `kill -9`: no destructors, no buffered journal writes, no lease release.
fn crash_now(what: &str) -> ! {
    eprintln!("dbctl: {what}: crashing (SIGKILL)");
    // SAFETY: raising SIGKILL on ourselves; nothing after it runs.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_arms_faults_only_in_builds_with_the_faults_feature() {
        let plan = FaultPlan::from_var(Some("deploy.primary@before=crash")).unwrap();
        assert_eq!(plan.rules.is_empty(), !cfg!(feature = "faults"));
        assert!(FaultPlan::from_var(None).unwrap().rules.is_empty());
    }

    #[test]
    fn parses_and_fires_by_attempt() {
        let p = FaultPlan::parse("a.b@before=transient*2; c@undo-after=permanent").unwrap();
        assert!(
            p.fire("a.b", &FaultPoint::Before, 1)
                .unwrap_err()
                .is_transient()
        );
        assert!(p.fire("a.b", &FaultPoint::Before, 2).is_err());
        assert!(p.fire("a.b", &FaultPoint::Before, 3).is_ok());
        assert!(p.fire("a.b", &FaultPoint::After, 1).is_ok());
        assert!(
            !p.fire("c", &FaultPoint::UndoAfter, 9)
                .unwrap_err()
                .is_transient()
        );
    }

    #[test]
    fn repeat_rules_repeat_and_never_fire() {
        let p = FaultPlan::parse("a@after=repeat*1;a@after=crash*0;b@undo-after=repeat").unwrap();
        assert!(p.repeats("a", &FaultPoint::After, 1));
        assert!(!p.repeats("a", &FaultPoint::After, 2));
        assert!(p.fire("a", &FaultPoint::After, 1).is_ok());
        assert!(p.repeats("b", &FaultPoint::UndoAfter, 7));
        assert!(!p.repeats("b", &FaultPoint::After, 1));
    }

    #[test]
    fn rejects_malformed_rules() {
        for bad in [
            "x",
            "x@Later=crash",
            "x@before=explode",
            "x@before=crash*n",
            "x@before=repeat",
            "x@undo-before=repeat",
        ] {
            assert!(FaultPlan::parse(bad).is_err(), "{bad}");
        }
    }
}
