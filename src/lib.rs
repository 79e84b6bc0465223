//! dbctl: provisions PostgreSQL on virtual machines by running a locally journaled saga.
//!
//! Read it in the order of the flow: [`spec`] (request and validation), [`scheduler`]
//! (placement), [`flow`] (which steps), [`provider`] (how each step is done), [`saga`] (running
//! steps with retries, resume and rollback), [`journal`] (durable state), [`operations`] (what
//! each command does), [`cli`] and [`progress`] (the user-facing edges).
pub mod atomic_file;
pub mod cli;
pub mod cloud_init;
pub mod config;
pub mod error;
pub mod flow;
pub mod journal;
pub mod operations;
pub mod postgres;
pub mod private_file;
pub mod progress;
pub mod provider;
pub mod register;
pub mod saga;
pub mod scheduler;
pub mod spec;
pub mod ssh;
pub mod toml_error;
/// The EC2 twin (test infrastructure): moto's API with real VMs behind it.
#[cfg(feature = "twin")]
pub mod twin;
