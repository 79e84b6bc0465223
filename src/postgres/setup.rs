//! `setup.<primary>`: application roles with generated passwords, the database owned by the
//! first, the requested extensions — all idempotent — and then readiness: a real SQL round trip
//! from the host over verified TLS with the application role.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Pg, client};
use crate::saga::{Step, StepCtx, StepError};

pub struct SetupPrimary {
    pub pg: Arc<Pg>,
    pub node: String,
}

/// How clients reach the database; recorded as the step's outputs (no password).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub ca_file: std::path::PathBuf,
}

impl SetupPrimary {
    /// The SQL, fed to psql on stdin. Statement logging and pg_stat_statements tracking are off
    /// for this session so the passwords are not recorded on the server either.
    fn sql(&self, passwords: &[(String, String)], cluster: Option<(&str, &str)>) -> String {
        let spec = &self.pg.spec;
        let owner = &spec.users[0];
        let mut sql = String::from(
            "\\set ON_ERROR_STOP on\nSET log_statement = 'none';\nSET log_min_error_statement = 'panic';\nSET pg_stat_statements.track = 'none';\n",
        );
        for (role, pw) in passwords {
            sql += &format!(
                "SELECT 'CREATE ROLE \"{role}\" LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') \\gexec\n\
                 ALTER ROLE \"{role}\" WITH LOGIN PASSWORD '{pw}';\n"
            );
        }
        if let Some((rep, rew)) = cluster {
            // The HA cluster's roles. Patroni creates them when it bootstraps; they are set
            // here as well so a cluster adopted from a restored backup has them too. Slots are
            // Patroni's (one per member, managed by it).
            sql += &format!(
                "SELECT 'CREATE ROLE replicator REPLICATION LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'replicator') \\gexec\n\
                 ALTER ROLE replicator WITH REPLICATION LOGIN PASSWORD '{rep}';\n\
                 SELECT 'CREATE ROLE rewind LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rewind') \\gexec\n\
                 ALTER ROLE rewind WITH LOGIN PASSWORD '{rew}';\n"
            );
            // What pg_rewind needs of a non-superuser (PostgreSQL's documented minimum).
            for f in [
                "pg_ls_dir(text, boolean, boolean)",
                "pg_stat_file(text, boolean)",
                "pg_read_binary_file(text)",
                "pg_read_binary_file(text, bigint, bigint, boolean)",
            ] {
                sql += &format!("GRANT EXECUTE ON FUNCTION pg_catalog.{f} TO rewind;\n");
            }
        }
        let db = &spec.database;
        sql += &format!(
            "SELECT 'CREATE DATABASE \"{db}\" OWNER \"{owner}\"' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{db}') \\gexec\n"
        );
        for (role, _) in passwords.iter().skip(1) {
            sql += &format!("GRANT ALL PRIVILEGES ON DATABASE \"{db}\" TO \"{role}\";\n");
        }
        sql += &format!("\\c \"{db}\"\n");
        for ext in &spec.extensions {
            sql += &format!("CREATE EXTENSION IF NOT EXISTS \"{ext}\";\n");
        }
        sql
    }
}

#[async_trait]
impl Step for SetupPrimary {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let pg = &self.pg;
        let spec = &pg.spec;
        let secrets = pg.secrets();
        let mut passwords = Vec::new();
        for u in &spec.users {
            let pw = secrets
                .password(&pg.instance_id, u)
                .map_err(|e| StepError::Permanent(format!("secrets: {e}")))?;
            passwords.push((u.clone(), pw));
        }
        let cluster = match spec.replicas {
            0 => None,
            _ => Some((
                pg.cluster_password(crate::postgres::patroni::REPLICATOR)?,
                pg.cluster_password(crate::postgres::patroni::REWIND)?,
            )),
        };
        let sql = self.sql(
            &passwords,
            cluster.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
        );
        pg.run_script(
            ctx,
            &self.node,
            "create roles, database, extensions",
            "sudo -u postgres psql -X -q -d postgres",
            Some(sql.as_bytes()),
            Duration::from_secs(300),
        )
        .await?;

        // Readiness: a real SQL round trip over verified TLS, from the host — the application's
        // own path where the host may connect, else through the node's SSH session to its
        // private address (TLS still end to end: the forward carries the encrypted stream).
        let (host, port) = pg.access.pg_endpoint(ctx, &self.node)?;
        let ca = pg.ca()?;
        let (user, pw) = &passwords[0];
        let (c, via) = if pg.access.pg_through_ssh() {
            let private = pg.access.private_address(ctx, &self.node)?;
            let session = pg.access.session(ctx, &self.node).await?;
            let stream = session
                .open_tcp(&private, 5432)
                .await
                .map_err(|e| StepError::Transient(format!("readiness: {e}")))?;
            let c = client::connect_over(stream, &private, user, pw, &spec.database, ca.cert_pem())
                .await;
            (c, format!("{private}:5432 through SSH"))
        } else {
            let c = client::connect(&host, port, user, pw, &spec.database, ca.cert_pem()).await;
            (c, format!("{host}:{port}"))
        };
        let c = c.map_err(|e| {
            StepError::Transient(format!(
                "readiness: cannot connect as {user} over TLS to {via}: {e}"
            ))
        })?;
        let row = c
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .map_err(|e| StepError::Transient(format!("readiness query: {e}")))?;
        if !row.get::<_, bool>(0) {
            return Err(StepError::Permanent(
                "readiness: connection is not encrypted".into(),
            ));
        }
        ctx.log(&format!(
            "ready: {user}@{via}/{} over verified TLS",
            spec.database
        ));
        let ep = Endpoint {
            host,
            port,
            database: spec.database.clone(),
            user: user.clone(),
            ca_file: ca.cert_path.clone(),
        };
        Ok(serde_json::to_value(ep).expect("json"))
    }

    async fn rollback(&self, ctx: &StepCtx) -> Result<(), StepError> {
        // The roles and database go with the cluster (deploy's rollback drops it); what lives
        // on this host is the passwords.
        self.pg
            .secrets()
            .forget(&self.pg.instance_id)
            .map_err(|e| StepError::Transient(format!("secrets: {e}")))?;
        ctx.log("forgot generated passwords");
        Ok(())
    }
}
