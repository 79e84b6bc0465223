//! Engine tests with in-process steps that record what they did.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};

use super::*;
use crate::journal::instances::{self, NewInstance};
use crate::journal::runs::{self, NewRun};
use crate::journal::steps::NewStep;
use crate::journal::{Journal, StepState};

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<(String, Instant, Instant)>>,
}

impl Recorder {
    fn push(&self, what: String, start: Instant) {
        self.events
            .lock()
            .unwrap()
            .push((what, start, Instant::now()));
    }
    fn names(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.0.clone())
            .collect()
    }
    fn span(&self, what: &str) -> (Instant, Instant) {
        let ev = self.events.lock().unwrap();
        let e = ev
            .iter()
            .find(|e| e.0 == what)
            .unwrap_or_else(|| panic!("no event {what}"));
        (e.1, e.2)
    }
}

struct TestStep {
    name: String,
    rec: Arc<Recorder>,
    delay: Duration,
    /// Fail transiently this many times, then succeed.
    transient_failures: AtomicU32,
    permanent: bool,
}

#[async_trait]
impl Step for TestStep {
    async fn execute(&self, _ctx: &StepCtx) -> Result<Value, StepError> {
        let start = Instant::now();
        tokio::time::sleep(self.delay).await;
        if self.permanent {
            return Err(StepError::Permanent(format!("{} is broken", self.name)));
        }
        if self
            .transient_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            self.rec.push(format!("fail {}", self.name), start);
            return Err(StepError::Transient("try again".into()));
        }
        self.rec.push(format!("exec {}", self.name), start);
        Ok(json!({ "made": self.name }))
    }

    async fn rollback(&self, ctx: &StepCtx) -> Result<(), StepError> {
        let start = Instant::now();
        let had = ctx
            .outputs
            .as_ref()
            .map(|o| o["made"] == self.name.as_str())
            .unwrap_or(false);
        self.rec
            .push(format!("undo {} outputs={had}", self.name), start);
        Ok(())
    }
}

fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_delay_ms: 1,
        max_delay_ms: 5,
        attempt_timeout_secs: 0,
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    journal: Arc<Journal>,
    rec: Arc<Recorder>,
    run_id: String,
}

/// A journal with one run whose steps are `(name, deps)`.
fn fixture(steps: &[(&str, &[&str])]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(Journal::open(&dir.path().join("j.db")).unwrap());
    let new_steps: Vec<NewStep> = steps
        .iter()
        .map(|(n, d)| NewStep {
            name: n.to_string(),
            stage: "provision".into(),
            action_json: "{}".into(),
            deps: d.iter().map(|s| s.to_string()).collect(),
        })
        .collect();
    journal
        .write(|tx| {
            instances::insert(
                tx,
                &NewInstance {
                    id: "inst-1",
                    project: "p",
                    name: "n",
                    provider: "test",
                    region: "r",
                    spec_json: "{}",
                    vcpus: 1,
                    memory_gib: 1,
                    disk_gib: 1,
                    nodes: 1,
                    expires_at: None,
                },
            )?;
            runs::insert(
                tx,
                &NewRun {
                    id: "run-1",
                    instance_id: "inst-1",
                    operation: "create",
                    idempotency_key: "k",
                    spec_hash: "h",
                    spec_json: "{}",
                    placement_json: "{}",
                    on_failure: "rollback",
                    settings_json: None,
                    steps: &new_steps,
                },
            )
        })
        .unwrap();
    Fixture {
        _dir: dir,
        journal,
        rec: Arc::new(Recorder::default()),
        run_id: "run-1".into(),
    }
}

struct Quiet;
impl Reporter for Quiet {
    fn step(&self, _: Phase, _: &str, _: &StepEvent) {}
    fn message(&self, _: &str) {}
}

impl Fixture {
    /// Binds every step; `tweak` may change one step's behaviour.
    fn saga(&self, retry: RetryPolicy, tweak: impl Fn(&mut TestStep)) -> Saga {
        let steps = self
            .journal
            .steps(&self.run_id)
            .unwrap()
            .into_iter()
            .map(|row| {
                let mut s = TestStep {
                    name: row.name.clone(),
                    rec: self.rec.clone(),
                    delay: Duration::from_millis(0),
                    transient_failures: AtomicU32::new(0),
                    permanent: false,
                };
                tweak(&mut s);
                BoundStep {
                    name: row.name,
                    deps: row.deps,
                    imp: Arc::new(s),
                }
            })
            .collect();
        Saga::new(
            self.journal.clone(),
            &self.run_id,
            steps,
            FaultPlan::default(),
            retry,
            Arc::new(Quiet),
        )
        .unwrap()
    }

    fn state(&self, step: &str) -> StepState {
        self.journal
            .steps(&self.run_id)
            .unwrap()
            .into_iter()
            .find(|s| s.name == step)
            .unwrap()
            .state
    }
}

#[tokio::test]
async fn independent_steps_run_concurrently_and_dependents_wait() {
    let f = fixture(&[("a", &[]), ("b", &[]), ("c", &[]), ("d", &["a", "b", "c"])]);
    let saga = f.saga(fast_retry(1), |s| s.delay = Duration::from_millis(300));
    let t0 = Instant::now();
    assert_eq!(saga.forward().await.unwrap(), Outcome::Succeeded);
    // Three 300 ms steps at once, then one more: well under the 1.2 s a serial run needs.
    assert!(
        t0.elapsed() < Duration::from_millis(1000),
        "took {:?}",
        t0.elapsed()
    );
    let (a, b, c, d) = (
        f.rec.span("exec a"),
        f.rec.span("exec b"),
        f.rec.span("exec c"),
        f.rec.span("exec d"),
    );
    assert!(a.0 < b.1 && b.0 < a.1 && c.0 < a.1, "a, b and c overlap");
    assert!(
        d.0 >= a.1 && d.0 >= b.1 && d.0 >= c.1,
        "d starts after all its deps end"
    );
}

#[tokio::test]
async fn transient_errors_are_retried_until_success() {
    let f = fixture(&[("a", &[]), ("b", &["a"])]);
    let saga = f.saga(fast_retry(5), |s| {
        if s.name == "b" {
            s.transient_failures = AtomicU32::new(3);
        }
    });
    assert_eq!(saga.forward().await.unwrap(), Outcome::Succeeded);
    assert_eq!(
        f.rec.names(),
        ["exec a", "fail b", "fail b", "fail b", "exec b"]
    );
    let b = f
        .journal
        .steps(&f.run_id)
        .unwrap()
        .into_iter()
        .find(|s| s.name == "b")
        .unwrap();
    assert_eq!((b.state, b.attempts), (StepState::Done, 4));
    assert_eq!(b.outputs, Some(json!({ "made": "b" })));
}

#[tokio::test]
async fn retry_exhaustion_fails_the_step_and_rollback_undoes_what_ran() {
    let f = fixture(&[("a", &[]), ("b", &["a"]), ("c", &["b"])]);
    let saga = f.saga(fast_retry(3), |s| {
        if s.name == "b" {
            s.transient_failures = AtomicU32::new(10);
        }
    });
    match saga.forward().await.unwrap() {
        Outcome::Failed { step, error } => {
            assert_eq!(step, "b");
            assert!(error.contains("gave up after 3 attempts"), "{error}");
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(f.state("b"), StepState::Failed);
    assert_eq!(f.state("c"), StepState::Pending);
    assert_eq!(saga.rollback().await.unwrap(), RollbackOutcome::RolledBack);
    let names = f.rec.names();
    // b ran (and may have had effects) so it is undone, before a; c never ran and is skipped.
    let undo: Vec<&String> = names.iter().filter(|n| n.starts_with("undo")).collect();
    assert_eq!(undo, ["undo b outputs=false", "undo a outputs=true"]);
    assert_eq!(
        (f.state("a"), f.state("b"), f.state("c")),
        (
            StepState::RolledBack,
            StepState::RolledBack,
            StepState::Skipped
        )
    );
}

#[tokio::test]
async fn permanent_errors_are_not_retried() {
    let f = fixture(&[("a", &[])]);
    let saga = f.saga(fast_retry(5), |s| s.permanent = true);
    assert!(matches!(
        saga.forward().await.unwrap(),
        Outcome::Failed { .. }
    ));
    assert_eq!(f.journal.steps(&f.run_id).unwrap()[0].attempts, 1);
}

#[tokio::test]
async fn rollback_order_is_reverse_topological() {
    // a → b → d, a → c → d, e independent.
    let f = fixture(&[
        ("a", &[]),
        ("b", &["a"]),
        ("c", &["a"]),
        ("d", &["b", "c"]),
        ("e", &[]),
    ]);
    let saga = f.saga(fast_retry(1), |s| s.delay = Duration::from_millis(20));
    assert_eq!(saga.forward().await.unwrap(), Outcome::Succeeded);
    let saga = f.saga(fast_retry(1), |_| {});
    assert_eq!(saga.rollback().await.unwrap(), RollbackOutcome::RolledBack);
    let undo = |n: &str| f.rec.span(&format!("undo {n} outputs=true"));
    let before = |x: &str, y: &str| {
        assert!(
            undo(x).1 <= undo(y).0,
            "undo {x} must finish before undo {y} starts"
        )
    };
    before("d", "b");
    before("d", "c");
    before("b", "a");
    before("c", "a");
    assert!(f.rec.names().iter().any(|n| n == "undo e outputs=true"));
}

#[tokio::test]
async fn resume_skips_done_steps_and_reruns_running_ones() {
    let f = fixture(&[("a", &[]), ("b", &["a"]), ("c", &["b"])]);
    // Simulate a crash: a done, b left running after its intent was journaled.
    f.journal.step_begin(&f.run_id, "a", "t").unwrap();
    f.journal
        .step_done(&f.run_id, "a", &json!({"made": "a"}))
        .unwrap();
    f.journal.step_begin(&f.run_id, "b", "t").unwrap();
    let saga = f.saga(fast_retry(1), |_| {});
    assert_eq!(saga.forward().await.unwrap(), Outcome::Succeeded);
    assert_eq!(f.rec.names(), ["exec b", "exec c"]);
    let b = f
        .journal
        .steps(&f.run_id)
        .unwrap()
        .into_iter()
        .find(|s| s.name == "b")
        .unwrap();
    assert_eq!(b.attempts, 2);
}

#[tokio::test]
async fn client_tokens_are_stable_per_generation() {
    assert_eq!(client_token("r", "s", 0), client_token("r", "s", 0));
    assert_ne!(client_token("r", "s", 0), client_token("r", "s", 1));
    assert!(client_token("r", "s", 0).len() <= 64);
}

#[test]
fn dag_errors_are_found_before_running() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let (a, b) = (s(&["b"]), s(&["a"]));
    assert!(matches!(
        validate_dag([("a", a.as_slice()), ("b", b.as_slice())].into_iter()),
        Err(DagError::Cycle(_))
    ));
    let x = s(&["nope"]);
    assert!(matches!(
        validate_dag([("a", x.as_slice())].into_iter()),
        Err(DagError::UnknownDep { .. })
    ));
    let e: Vec<String> = vec![];
    assert!(matches!(
        validate_dag([("a", e.as_slice()), ("a", e.as_slice())].into_iter()),
        Err(DagError::Duplicate(_))
    ));
}

/// Makes the journal refuse to record `state` for any step, as a failing disk or a locked
/// database would (a trigger raises the error inside SQLite).
fn journal_refuses(f: &Fixture, state: &str) {
    f.journal
        .write(|tx| {
            tx.execute_batch(&format!(
                "CREATE TRIGGER refuse BEFORE UPDATE OF state ON steps WHEN NEW.state = '{state}'
                 BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END;"
            ))?;
            Ok::<_, crate::journal::JournalError>(())
        })
        .unwrap();
}

fn journal_heals(f: &Fixture) {
    f.journal
        .write(|tx| {
            tx.execute_batch("DROP TRIGGER refuse")?;
            Ok::<_, crate::journal::JournalError>(())
        })
        .unwrap();
}

#[tokio::test]
async fn a_journal_error_stops_the_run_where_it_is_instead_of_failing_it() {
    let f = fixture(&[("a", &[]), ("b", &["a"])]);
    journal_refuses(&f, "done");
    let saga = f.saga(fast_retry(3), |_| {});
    let out = saga.forward().await.unwrap();
    assert!(
        matches!(out, Outcome::Stopped { ref step, .. } if step == "a"),
        "{out:?}"
    );
    // Not a failure: no retry of the remote work, nothing undone, `a` left as after a crash.
    assert_eq!(f.rec.names(), ["exec a"]);
    assert_eq!(f.state("a"), StepState::Running);
    assert_eq!(f.state("b"), StepState::Pending);
    journal_heals(&f);
    assert_eq!(saga.forward().await.unwrap(), Outcome::Succeeded);
    assert_eq!(f.rec.names(), ["exec a", "exec a", "exec b"]);
}

#[tokio::test]
async fn a_journal_error_in_a_rollback_stops_it_resumable() {
    let f = fixture(&[("a", &[]), ("b", &["a"])]);
    let saga = f.saga(fast_retry(1), |_| {});
    assert_eq!(saga.forward().await.unwrap(), Outcome::Succeeded);
    journal_refuses(&f, "rolled_back");
    let out = saga.rollback().await.unwrap();
    assert!(
        matches!(out, RollbackOutcome::Stopped { ref step, .. } if step == "b"),
        "{out:?}"
    );
    // `a` was not undone while `b`'s undo could not be recorded.
    assert_eq!(f.state("b"), StepState::RollingBack);
    assert_eq!(f.state("a"), StepState::Done);
    journal_heals(&f);
    assert_eq!(saga.rollback().await.unwrap(), RollbackOutcome::RolledBack);
    assert_eq!(f.state("a"), StepState::RolledBack);
}
