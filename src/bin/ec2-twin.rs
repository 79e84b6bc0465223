//! `ec2-twin`: the EC2 twin's process (test infrastructure; feature `twin`). See `dbctl::twin`
//! and `scripts/ec2-twin`, which starts moto_server and this in the background.
//!
//! `ec2-twin serve --moto URL --state DIR [--cloud-image PATH]` registers the twin AMI (and,
//! given a stock cloud image, a second one) in moto, listens on a loopback port and writes
//! `DIR/endpoint`, `DIR/ami` (and `DIR/ami-cloud`) once it serves; SIGTERM or SIGINT stops
//! every VM it started and removes them. `ec2-twin stop-vms --state DIR` does the same for a
//! twin that died without doing it.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use dbctl::provider::local::{image, image_import};
use dbctl::twin::{ami, fleet::Fleet, machine, proxy};

#[derive(Parser)]
#[command(
    name = "ec2-twin",
    about = "moto's EC2 API with real VMs behind its instances"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the twin in front of a running moto_server.
    Serve {
        /// moto_server's endpoint (loopback only), e.g. http://127.0.0.1:5000
        #[arg(long)]
        moto: String,
        /// Where the twin listens (a loopback address; port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// The twin's own directory: VMs, networks, fleet.json, endpoint, ami.
        #[arg(long)]
        state: PathBuf,
        /// dbctl's cache (where `dbctl image build` put the image); default ~/.cache/dbctl.
        #[arg(long)]
        cache: Option<PathBuf>,
        /// A stock cloud image (qcow2 or raw: its own default user, no PostgreSQL) to serve
        /// as a second AMI, written to DIR/ami-cloud; imported into the cache once.
        #[arg(long, env = "DBCTL_TWIN_CLOUD_IMAGE")]
        cloud_image: Option<PathBuf>,
        /// An S3 endpoint NAME:PORT served on 127.0.0.1:PORT (moto's S3 behind TLS, say): the
        /// VMs reach it by NAME through a relay, as EC2 instances reach S3 through their VPC.
        #[arg(long, env = "DBCTL_TWIN_S3")]
        s3: Option<String>,
    },
    /// Stop every VM and network of a twin's state directory and remove them.
    StopVms {
        #[arg(long)]
        state: PathBuf,
    },
    /// The VPC network switch of one VPC (started by the twin itself).
    #[command(hide = true)]
    LocalHub {
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        pidfile: PathBuf,
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Splices stdin/stdout to HOST:PORT (run by QEMU for a guest's package mirror).
    #[command(hide = true)]
    Relay {
        target: String,
        /// The VM directory it serves (names whose relay it is in `ps`)
        #[arg(long = "for")]
        vm_dir: Option<PathBuf>,
    },
    /// Serves one guest connection to the instance metadata service (run by QEMU).
    #[command(hide = true)]
    Imds {
        /// The instance's facts (`<state>/vms/<id>/imds.json`, 0600)
        #[arg(long)]
        facts: PathBuf,
        /// The twin's token key (`<state>/imds.key`, 0600)
        #[arg(long)]
        key: PathBuf,
    },
}

fn default_cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("dbctl")
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let cli = Cli::parse();
    if let Command::Relay { target, .. } = &cli.command {
        dbctl::provider::local::relay::run(target)
            .map_err(|e| anyhow::anyhow!("relay to {target}: {e}"))?;
        return Ok(());
    }
    if let Command::Imds { facts, key } = &cli.command {
        dbctl::twin::imds::serve(facts, key)
            .map_err(|e| anyhow::anyhow!("metadata service: {e}"))?;
        return Ok(());
    }
    if let Command::LocalHub {
        socket,
        pidfile,
        policy,
    } = &cli.command
    {
        dbctl::provider::local::hub::serve(socket, pidfile, policy.as_deref())?;
        return Ok(());
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        match cli.command {
            Command::Serve {
                moto,
                listen,
                state,
                cache,
                cloud_image,
                s3,
            } => {
                let cache = cache.unwrap_or_else(default_cache);
                let s3 = s3
                    .map(|e| machine::S3Endpoint::parse(&e))
                    .transpose()
                    .map_err(anyhow::Error::msg)?;
                serve(&moto, listen, state, cache, cloud_image, s3).await
            }
            Command::StopVms { state } => {
                let layout = machine::Layout {
                    root: state,
                    s3: None,
                };
                machine::stop_everything(&layout, true).await;
                Ok(())
            }
            Command::LocalHub { .. } | Command::Relay { .. } | Command::Imds { .. } => {
                unreachable!("handled above")
            }
        }
    })
}

async fn serve(
    moto: &str,
    listen: std::net::SocketAddr,
    state: PathBuf,
    cache: PathBuf,
    cloud_image: Option<PathBuf>,
    s3: Option<machine::S3Endpoint>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        listen.ip().is_loopback(),
        "--listen must be a loopback address"
    );
    std::fs::create_dir_all(&state)?;
    dbctl::twin::imds::ensure_key(&state.join("imds.key"))?;
    let image = image::current(&cache)?;
    let upstream = proxy::Upstream::new(moto).map_err(anyhow::Error::msg)?;
    let ami_id = ami::ensure(
        &upstream,
        &format!("dbctl-twin-{}", image.manifest.name),
        "dbctl's own image, booted by the EC2 twin",
    )
    .await
    .map_err(anyhow::Error::msg)?;
    let mut images = std::collections::BTreeMap::from([(ami_id.clone(), image)]);
    let _ = std::fs::remove_file(state.join("ami-cloud"));
    let mut cloud_ami = None;
    if let Some(path) = cloud_image {
        let (cache, path2) = (cache.clone(), path.clone());
        let cloud = tokio::task::spawn_blocking(move || {
            image_import::import(&cache, &path2, &|m| tracing::info!("cloud image: {m}"))
        })
        .await??;
        let id = ami::ensure(
            &upstream,
            &format!("dbctl-twin-{}", cloud.manifest.name),
            "a stock cloud image (its own default user, no PostgreSQL), booted by the EC2 twin",
        )
        .await
        .map_err(anyhow::Error::msg)?;
        tracing::info!(ami = id, image = %path.display(), "cloud AMI");
        images.insert(id.clone(), cloud);
        cloud_ami = Some(id);
    }
    let layout = machine::Layout {
        root: state.clone(),
        s3,
    };
    let block = dbctl::twin::loopback::Block::take()?;
    tracing::info!(block = %format!("127.{}.0.0/16", block.octet), "public addresses");
    let fleet = Arc::new(Fleet::new(
        layout.clone(),
        images,
        upstream.clone(),
        dbctl::twin::security::moto_client(moto),
        block,
    ));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    std::fs::write(state.join("ami"), format!("{ami_id}\n"))?;
    if let Some(id) = &cloud_ami {
        std::fs::write(state.join("ami-cloud"), format!("{id}\n"))?;
    }
    // Written last: its presence says the twin serves.
    std::fs::write(state.join("endpoint"), format!("{endpoint}\n"))?;
    tracing::info!(endpoint, ami = ami_id, "EC2 twin serving");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = proxy::serve(listener, upstream, fleet) => r?,
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stopping every VM");
    let _ = std::fs::remove_file(state.join("endpoint"));
    machine::stop_everything(&layout, true).await;
    Ok(())
}
