//! Command failures and their exit codes: the contract scripts rely on (see README).

use crate::journal::LeaseHolder;
use crate::spec::ValidationError;

/// Exit codes. Stable: documented in `--help` and the README.
pub mod exit {
    pub const OK: u8 = 0;
    pub const INTERNAL: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const QUOTA: u8 = 3;
    pub const ROLLED_BACK: u8 = 4;
    pub const KEPT: u8 = 5;
    pub const ROLLBACK_FAILED: u8 = 6;
    pub const LEASE_HELD: u8 = 7;
    pub const NOT_FOUND: u8 = 8;
    pub const INTERRUPTED: u8 = 130;
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("invalid request: {0}")]
    Invalid(#[from] ValidationError),
    #[error("quota exceeded for project {project}: {detail}")]
    Quota { project: String, detail: String },
    #[error("run {run} failed at {step}: {error}; everything it created was rolled back")]
    RolledBack {
        run: String,
        step: String,
        error: String,
    },
    #[error(
        "run {run} failed at {step}: {error}; resources kept for debugging (dbctl resume {run} / dbctl rollback {run})"
    )]
    Kept {
        run: String,
        step: String,
        error: String,
    },
    #[error(
        "run {run}: rollback failed at {steps}; resources may remain (fix the cause, then dbctl rollback {run})"
    )]
    RollbackFailed { run: String, steps: String },
    #[error("run {run} is being driven by pid {} on {} (lease expires {}); wait for it or stop it first", .holder.pid, .holder.host, crate::journal::format_ms(.holder.expires_at))]
    LeaseHeld { run: String, holder: LeaseHolder },
    #[error("{0}")]
    NotFound(String),
    /// `gc` could not remove everything it set out to; what it did is in `report`.
    #[error("gc: {failed} of {total} removals failed; resources may remain (first: {first})")]
    GcIncomplete {
        failed: usize,
        total: usize,
        first: String,
        report: Box<serde_json::Value>,
    },
    #[error("run {run} interrupted ({why}); continue with: dbctl resume {run}")]
    Interrupted { run: String, why: String },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Invalid(_) => exit::USAGE,
            CliError::Quota { .. } => exit::QUOTA,
            CliError::RolledBack { .. } => exit::ROLLED_BACK,
            CliError::Kept { .. } => exit::KEPT,
            CliError::RollbackFailed { .. } | CliError::GcIncomplete { .. } => {
                exit::ROLLBACK_FAILED
            }
            CliError::LeaseHeld { .. } => exit::LEASE_HELD,
            CliError::NotFound(_) => exit::NOT_FOUND,
            CliError::Interrupted { .. } => exit::INTERRUPTED,
            CliError::Internal(_) => exit::INTERNAL,
        }
    }

    /// A stable machine-readable name for JSON output.
    pub fn kind(&self) -> &'static str {
        match self {
            CliError::Invalid(_) => "invalid",
            CliError::Quota { .. } => "quota_exceeded",
            CliError::RolledBack { .. } => "run_failed_rolled_back",
            CliError::Kept { .. } => "run_failed_kept",
            CliError::RollbackFailed { .. } => "rollback_failed",
            CliError::GcIncomplete { .. } => "gc_incomplete",
            CliError::LeaseHeld { .. } => "lease_held",
            CliError::NotFound(_) => "not_found",
            CliError::Interrupted { .. } => "interrupted",
            CliError::Internal(_) => "internal",
        }
    }

    /// The JSON document printed on stdout with `--output json`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "error": { "kind": self.kind(), "exit_code": self.exit_code(), "message": self.to_string() }
        });
        let extra = match self {
            CliError::Invalid(e) => serde_json::json!({ "field": e.field }),
            CliError::RolledBack { run, step, .. } | CliError::Kept { run, step, .. } => {
                serde_json::json!({ "run": run, "step": step })
            }
            CliError::RollbackFailed { run, .. } | CliError::Interrupted { run, .. } => {
                serde_json::json!({ "run": run })
            }
            CliError::LeaseHeld { run, holder } => {
                serde_json::json!({ "run": run, "holder": holder })
            }
            CliError::GcIncomplete { report, .. } => serde_json::json!({ "report": report }),
            _ => serde_json::json!({}),
        };
        if let (Some(obj), serde_json::Value::Object(more)) = (v["error"].as_object_mut(), extra) {
            obj.extend(more);
        }
        v
    }
}

impl From<crate::journal::JournalError> for CliError {
    fn from(e: crate::journal::JournalError) -> Self {
        CliError::Internal(e.into())
    }
}

impl From<crate::saga::EngineError> for CliError {
    fn from(e: crate::saga::EngineError) -> Self {
        CliError::Internal(e.into())
    }
}
