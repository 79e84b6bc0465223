//! `dbctl connect NAME`: the connection URI of an instance (TLS verify-full against dbctl's
//! CA), or a psql session with it.
//!
//! For an HA cluster the URI lists every node with `target_session_attrs=read-write`: libpq
//! (and JDBC, and most drivers built on the same syntax) tries them in turn and keeps the one
//! that takes writes, so after a failover the same string reaches the new leader. `--replica`
//! asks for `prefer-standby` instead: a standby when one answers, else the leader.

use std::os::unix::process::CommandExt;

use clap::Args;
use serde::Serialize;

use super::output::emit;
use crate::error::CliError;
use crate::operations::{self, App};
use crate::postgres::Endpoint;
use crate::postgres::secrets::SecretStore;

#[derive(Debug, Args)]
#[command(
    after_long_help = "The URI holds the generated password: treat the output as a secret. \
    For an HA instance it names every node; libpq picks the current leader \
    (target_session_attrs=read-write), so the same URI keeps working after a failover.\n\n\
    Examples:\n  psql \"$(dbctl connect orders)\"\n  dbctl connect orders --psql\n  \
    export PGPASSFILE=$(dbctl connect orders --passfile --output json | jq -r .passfile)\n  dbctl connect orders --replica\n  dbctl connect orders --output json | jq -r .uri"
)]
pub struct ConnectArgs {
    /// Instance name
    pub name: String,

    #[arg(long)]
    pub project: Option<String>,

    /// Application role to connect as [default: the first one]
    #[arg(long)]
    pub user: Option<String>,

    /// Prefer a streaming replica (read-only; the leader when no replica answers)
    #[arg(long)]
    pub replica: bool,

    /// Run psql instead of printing the URI (the password goes through PGPASSWORD, not argv)
    #[arg(long, conflicts_with = "passfile")]
    pub psql: bool,

    /// Keep the password out of the URI: write it to a libpq password file (0600, removed by
    /// destroy) and print the URI without it; use the file with PGPASSFILE
    #[arg(long)]
    pub passfile: bool,
}

#[derive(Serialize)]
struct ConnectView {
    uri: String,
    /// The first host (the only one of a single node).
    host: String,
    port: u16,
    /// Every host the URI names, in order.
    hosts: Vec<HostView>,
    database: String,
    user: String,
    sslmode: &'static str,
    sslrootcert: std::path::PathBuf,
    /// `read-write`, `prefer-standby`, or absent for a single host.
    #[serde(skip_serializing_if = "Option::is_none")]
    target_session_attrs: Option<&'static str>,
    /// With --passfile: the libpq password file (the URI then holds no password).
    #[serde(skip_serializing_if = "Option::is_none")]
    passfile: Option<std::path::PathBuf>,
}

#[derive(Serialize, Clone)]
pub(super) struct HostView {
    pub node: String,
    pub host: String,
    pub port: u16,
}

/// The nodes a URI names: every registered node of a Patroni cluster; otherwise (single
/// node, HA built before Patroni) the primary, or the replicas with `--replica`.
fn hosts_of(
    steps: &[crate::journal::StepRow],
    replica: bool,
    patroni: bool,
) -> Option<(Vec<HostView>, Endpoint)> {
    let endpoint_of = |name: &str| -> Option<Endpoint> {
        let s = steps.iter().find(|s| s.name == name)?;
        serde_json::from_value(s.outputs.clone()?).ok()
    };
    let registered: Vec<serde_json::Value> =
        crate::journal::outputs_of(steps, "register.endpoints")
            .and_then(|o| o["endpoints"].as_array().cloned())
            .unwrap_or_default();
    let view = |e: &serde_json::Value| {
        Some(HostView {
            node: e["node"].as_str()?.to_string(),
            host: e["host"].as_str()?.to_string(),
            port: e["port"].as_u64()? as u16,
        })
    };
    // The step that created the application's roles recorded how the host reaches them.
    let primary_step = steps.iter().find(|s| {
        serde_json::from_str::<crate::flow::Action>(&s.action_json)
            .is_ok_and(|a| matches!(a, crate::flow::Action::SetupPrimary { .. }))
    })?;
    let template = endpoint_of(&primary_step.name)?;
    let hosts: Vec<HostView> = if patroni {
        registered.iter().filter_map(view).collect()
    } else if replica {
        registered
            .iter()
            .filter(|e| e["role"] == "replica")
            .filter_map(view)
            .collect()
    } else {
        vec![HostView {
            node: primary_step.name.trim_start_matches("setup.").to_string(),
            host: template.host.clone(),
            port: template.port,
        }]
    };
    (!hosts.is_empty()).then_some((hosts, template))
}

/// What a connection URI is made of, with the role's password kept apart from it.
pub(super) struct Target {
    pub hosts: Vec<HostView>,
    pub user: String,
    pub database: String,
    pub ca_file: std::path::PathBuf,
    pub attrs: Option<&'static str>,
    pub password: String,
}

impl Target {
    /// The URI; the password is in it only when `with_password`.
    pub fn uri(&self, with_password: bool) -> String {
        let mut query = format!("sslmode=verify-full&sslrootcert={}", self.ca_file.display());
        if let Some(a) = self.attrs {
            // A dead node's address may time out rather than refuse (a cloud VM that is gone).
            query += &format!("&target_session_attrs={a}&connect_timeout=10");
        }
        let host_list = self
            .hosts
            .iter()
            .map(|h| format!("{}:{}", h.host, h.port))
            .collect::<Vec<_>>()
            .join(",");
        let auth = match with_password {
            true => format!("{}:{}", self.user, self.password),
            false => self.user.clone(),
        };
        format!("postgresql://{auth}@{host_list}/{}?{query}", self.database)
    }

    /// Writes the libpq password file for this target (every host it names) and returns its
    /// path, so a client given `uri(false)` and `PGPASSFILE` never sees the password.
    pub fn write_passfile(
        &self,
        app: &App,
        instance_id: &str,
    ) -> Result<std::path::PathBuf, CliError> {
        let hosts: Vec<(&str, u16)> = self
            .hosts
            .iter()
            .map(|h| (h.host.as_str(), h.port))
            .collect();
        SecretStore::new(&app.state_dir())
            .write_passfile(instance_id, &self.user, &hosts, &self.database)
            .map_err(|e| anyhow::anyhow!("cannot write the password file: {e}").into())
    }
}

/// How to reach `instance` (built by `run`) as `user` (default: its first role).
pub(super) fn target(
    app: &App,
    instance: &crate::journal::InstanceRow,
    run: &crate::journal::RunRow,
    steps: &[crate::journal::StepRow],
    user: Option<String>,
    replica: bool,
) -> Result<Target, CliError> {
    let name = &instance.name;
    let patroni = super::cluster::is_patroni(run);
    let (hosts, ep) = hosts_of(steps, replica, patroni).ok_or_else(|| {
        CliError::NotFound(format!(
            "{name}: not ready yet (no endpoint recorded; see dbctl status {name})"
        ))
    })?;
    let user = user.unwrap_or(ep.user.clone());
    let password = SecretStore::new(&app.state_dir())
        .existing(&instance.id, &user)
        .ok_or_else(|| CliError::NotFound(format!("{name}: no password stored for role {user}")))?;
    let attrs = match (patroni, replica) {
        (true, false) => Some("read-write"),
        (true, true) => Some("prefer-standby"),
        _ => None,
    };
    Ok(Target {
        hosts,
        user,
        database: ep.database,
        ca_file: ep.ca_file,
        attrs,
        password,
    })
}

pub fn run(app: &App, args: ConnectArgs) -> Result<(), CliError> {
    let (journal, instance, run) =
        operations::instance_with_run(app, &args.name, args.project.as_deref())?;
    let steps = journal.steps(&run.id)?;
    let t = target(app, &instance, &run, &steps, args.user, args.replica)?;
    if args.psql {
        let err = std::process::Command::new("psql")
            .arg(t.uri(false))
            .env("PGPASSWORD", &t.password)
            .exec();
        return Err(anyhow::anyhow!("cannot run psql: {err}").into());
    }
    let passfile = match args.passfile {
        true => Some(t.write_passfile(app, &instance.id)?),
        false => None,
    };
    let view = ConnectView {
        uri: t.uri(passfile.is_none()),
        host: t.hosts[0].host.clone(),
        port: t.hosts[0].port,
        hosts: t.hosts.clone(),
        database: t.database,
        user: t.user,
        sslmode: "verify-full",
        sslrootcert: t.ca_file,
        target_session_attrs: t.attrs,
        passfile,
    };
    if let Some(p) = &view.passfile
        && !app.json
    {
        eprintln!("password in {0}: export PGPASSFILE={0}", p.display());
    }
    emit(app, &view, || view.uri.clone());
    Ok(())
}
