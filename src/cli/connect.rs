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
use crate::spec::ValidationError;

#[derive(Debug, Args)]
#[command(
    after_long_help = "The URI holds the generated password: treat the output as a secret. \
    For an HA instance it names every node; libpq picks the current leader \
    (target_session_attrs=read-write), so the same URI keeps working after a failover.\n\n\
    Examples:\n  psql \"$(dbctl connect orders)\"\n  dbctl connect orders --psql\n  \
    export PGPASSFILE=$(dbctl connect orders --passfile --output json | jq -r .passfile)\n  dbctl connect orders --replica\n  dbctl connect orders --output json | jq -r .uri\n\n\
    On aws the URI names the instance's public address, which only the VPC (and \
    aws.extra_pg_cidrs) may reach on 5432. From anywhere SSH reaches, use --psql, or --tunnel:\n  \
    dbctl connect orders --psql\n  \
    dbctl connect orders --tunnel --passfile --output json > tunnel.json &   # the URI, then holds the ports\n  \
    PGPASSFILE=$(jq -r .passfile tunnel.json) psql \"$(jq -r .uri tunnel.json)\""
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

    /// Run psql instead of printing the URI (the password goes through PGPASSWORD, not argv);
    /// on aws it connects through a tunnel like --tunnel's, closed when psql ends
    #[arg(long, conflicts_with = "passfile")]
    pub psql: bool,

    /// aws: hold local ports forwarded through SSH to the instance's PostgreSQL (its security
    /// group opens 5432 to the VPC, not to this machine), print the URI for them, and keep
    /// them open until interrupted (Ctrl-C, SIGTERM)
    #[arg(long, conflicts_with = "psql")]
    pub tunnel: bool,

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
    /// With --tunnel: the local addresses (`hostaddr`) the hosts are reached at, in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    hostaddr: Option<Vec<String>>,
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
    /// Where each host is really connected to (libpq's `hostaddr`: a tunnel's local end), when
    /// not at the host itself; TLS still verifies the host's name.
    pub hostaddrs: Option<Vec<String>>,
}

impl Target {
    /// The URI; the password is in it only when `with_password`.
    pub fn uri(&self, with_password: bool) -> String {
        let mut query = format!("sslmode=verify-full&sslrootcert={}", self.ca_file.display());
        if let Some(a) = self.attrs {
            // A dead node's address may time out rather than refuse (a cloud VM that is gone).
            query += &format!("&target_session_attrs={a}&connect_timeout=10");
        }
        if let Some(addrs) = &self.hostaddrs {
            query += &format!("&hostaddr={}", addrs.join(","));
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
        hostaddrs: None,
    })
}

pub async fn run(app: &App, args: ConnectArgs) -> Result<(), CliError> {
    let (journal, instance, run) =
        operations::instance_with_run(app, &args.name, args.project.as_deref())?;
    let through_ssh = instance.provider == "aws" && (args.tunnel || args.psql);
    if args.tunnel && !through_ssh {
        return Err(ValidationError::new(
            "tunnel",
            format!(
                "{} is on {}, whose PostgreSQL this host reaches directly; --tunnel is for aws",
                args.name, instance.provider
            ),
        )
        .into());
    }
    let steps = journal.steps(&run.id)?;
    let mut t = target(app, &instance, &run, &steps, args.user, args.replica)?;
    // Held until this command ends: the URI below points at them.
    let _forwards = match through_ssh {
        true => tunnel(app, &run, &steps, &mut t).await?,
        false => Vec::new(),
    };
    if args.psql {
        let mut psql = std::process::Command::new("psql");
        psql.arg(t.uri(false)).env("PGPASSWORD", &t.password);
        if !through_ssh {
            let err = psql.exec();
            return Err(anyhow::anyhow!("cannot run psql: {err}").into());
        }
        // Not exec: the tunnel lives in this process. psql's exit status is ours.
        let status = tokio::process::Command::from(psql)
            .status()
            .await
            .map_err(|e| anyhow::anyhow!("cannot run psql: {e}"))?;
        drop(_forwards);
        std::process::exit(status.code().unwrap_or(1));
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
        hostaddr: t.hostaddrs,
    };
    if let Some(p) = &view.passfile
        && !app.json
    {
        eprintln!("password in {0}: export PGPASSFILE={0}", p.display());
    }
    emit(app, &view, || view.uri.clone());
    if args.tunnel {
        use std::io::Write;
        let _ = std::io::stdout().flush();
        eprintln!("tunnel open; Ctrl-C (or SIGTERM) closes it");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| anyhow::anyhow!("signals: {e}"))?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    Ok(())
}

/// Opens a forward through SSH to every host of `t` (an aws instance's nodes) and points `t`
/// at them: each host becomes the node's private address (what TLS verifies), reached at the
/// forward's local port.
async fn tunnel(
    app: &App,
    run: &crate::journal::RunRow,
    steps: &[crate::journal::StepRow],
    t: &mut Target,
) -> Result<Vec<crate::provider::aws::tunnel::Forward>, CliError> {
    let spec = operations::run_spec(run)?;
    let mut nodes = Vec::new();
    for h in &t.hosts {
        let vm: crate::provider::aws::InstanceOut =
            crate::journal::outputs_of(steps, &format!("provision.vm.{}", h.node))
                .and_then(|o| serde_json::from_value(o.clone()).ok())
                .ok_or_else(|| {
                    CliError::NotFound(format!("node {}: no instance recorded", h.node))
                })?;
        nodes.push((h.node.clone(), vm));
    }
    let forwards =
        crate::provider::aws::tunnel::open(&app.config.aws, &spec, app.state_dir(), &nodes)
            .await
            .map_err(|e| anyhow::anyhow!("tunnel: {e}"))?;
    for (h, f) in t.hosts.iter_mut().zip(&forwards) {
        h.host = f.server_name.clone();
        h.port = f.local.port();
    }
    t.hostaddrs = Some(forwards.iter().map(|f| f.local.ip().to_string()).collect());
    Ok(forwards)
}
