//! The seed's Register stage: what makes a running instance findable, watched and recoverable —
//! endpoints, DNS names, Prometheus targets, WAL archiving and scheduled backups.

pub mod backup_info;
mod backup_task;
mod backups;
mod dns;
mod endpoints;
pub mod hosts;
pub mod leftovers;
mod monitoring;
pub mod pgbackrest;
mod settings;

pub use backup_task::BackupTask;
pub use backups::{CONF_PATH, RegisterBackups, install_config};
pub use dns::RegisterDns;
pub use endpoints::RegisterEndpoints;
pub use monitoring::{NODE_EXPORTER_PORT, POSTGRES_EXPORTER_PORT, RegisterMonitoring};
pub use settings::{Settings, s3_credentials, stanza};
