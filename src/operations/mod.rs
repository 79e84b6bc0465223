//! What each command does, apart from argument parsing and printing (the `cli` module).

pub mod admit;
pub mod day2;
mod drive;
pub mod gc;
mod lease_keeper;
mod lookup;
mod placement;
mod task;

pub use admit::{Admission, admit};
pub use drive::{drive_forward, drive_rollback};
pub use lookup::{
    find_instance, find_run, instance_with_run, latest_create_run, require_backups, run_placement,
    run_spec,
};
pub use placement::place;
pub use task::run_task;

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::error::CliError;
use crate::journal::Journal;

/// What every command gets: where the journal is, the loaded config, how to print.
pub struct App {
    pub journal_path: PathBuf,
    pub config: Config,
    pub json: bool,
}

impl App {
    /// Opens the journal, creating it if needed (commands that write).
    pub fn journal(&self) -> Result<Arc<Journal>, CliError> {
        Ok(Arc::new(Journal::open(&self.journal_path)?))
    }

    /// Opens the journal only if it exists (commands that only read never create one).
    pub fn existing_journal(&self) -> Result<Option<Arc<Journal>>, CliError> {
        Ok(Journal::open_existing(&self.journal_path)?.map(Arc::new))
    }

    /// Where dbctl keeps rebuildable things (base images): `$DBCTL_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/dbctl`.
    pub fn cache_dir(&self) -> PathBuf {
        crate::config::default_cache_dir()
    }

    /// Per-run files of the local provider, SSH keys, CA: beside the journal, so one journal's
    /// state stays together (and tests with their own journal stay apart).
    pub fn state_dir(&self) -> PathBuf {
        self.journal_path
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
    }

    /// The provider that runs `name` for this journal.
    pub fn provider(
        &self,
        name: &str,
    ) -> Result<Box<dyn crate::provider::Provider>, crate::spec::ValidationError> {
        self.provider_with(name, &self.config)
    }

    /// The provider `name` bound with `config` (a run's recorded settings).
    pub fn provider_with(
        &self,
        name: &str,
        config: &Config,
    ) -> Result<Box<dyn crate::provider::Provider>, crate::spec::ValidationError> {
        let dirs = crate::provider::ProviderDirs {
            state: self.state_dir(),
            cache: self.cache_dir(),
        };
        crate::provider::connect(name, config, &dirs)
    }

    /// Like [`App::existing_journal`], but a missing journal means the run cannot exist.
    pub fn journal_for(&self, what: &str) -> Result<Arc<Journal>, CliError> {
        self.existing_journal()?.ok_or_else(|| {
            CliError::NotFound(format!(
                "{what} not found (no journal at {})",
                self.journal_path.display()
            ))
        })
    }
}

/// A short random id with a prefix: `run-3f9a0c1b2d`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", hex::encode(rand::random::<[u8; 5]>()))
}
