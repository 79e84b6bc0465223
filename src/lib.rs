//! dbctl: provisions PostgreSQL on virtual machines by running a locally journaled saga.
pub mod provider;
