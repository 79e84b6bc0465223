//! `dbctl image build|import|list`: the images the local provider boots.

use clap::{Args, Subcommand};

use super::output::{emit, table};
use crate::error::CliError;
use crate::operations::App;
use crate::provider::local::image::{self, ImageError};
use crate::spec::ValidationError;

#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build the base image (Debian 12 + PostgreSQL) if missing or its recipe changed; needs root
    #[command(
        after_long_help = "Takes a few minutes (debootstrap). Example:\n  sudo dbctl image build"
    )]
    Build {
        /// Rebuild even if an image for this recipe exists
        #[arg(long)]
        force: bool,
    },
    /// Import a cloud image (qcow2 or raw with cloud-init, e.g. an official Debian or Ubuntu
    /// genericcloud image) to boot instead of the built one
    #[command(
        after_long_help = "The file is copied into the image cache (named by its SHA-256, \
so importing it again is a no-op). VMs boot it through its own bootloader; cloud-init \
configures them from dbctl's NoCloud seed, and PostgreSQL, pgBackRest and the exporters are \
installed on first boot from the image's package sources, reached only through \
[local] package_hosts. `dbctl create --image PATH` imports implicitly. Example:\n  \
dbctl image import ~/Downloads/debian-12-genericcloud-amd64.qcow2\n  \
dbctl create orders --image cloud-0123456789ab"
    )]
    Import {
        /// The image file
        path: std::path::PathBuf,
    },
    /// List built and imported images
    List,
}

impl From<ImageError> for CliError {
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::NotRoot
            | ImageError::MissingTool(..)
            | ImageError::Missing(_)
            | ImageError::Invalid(_) => ValidationError::new("image", e.to_string()).into(),
            other => CliError::Internal(other.into()),
        }
    }
}

pub async fn run(app: &App, args: ImageArgs) -> Result<(), CliError> {
    let cache = app.cache_dir();
    match args.command {
        ImageCommand::Build { force } => {
            let img = tokio::task::spawn_blocking(move || {
                image::build(&cache, force, &|line| eprintln!("image: {line}"))
            })
            .await
            .map_err(|e| anyhow::anyhow!("image build task: {e}"))??;
            emit(app, &img, || {
                format!("{} ready at {}", img.manifest.name, img.dir.display())
            });
        }
        ImageCommand::Import { path } => {
            let quiet = app.json;
            let img = tokio::task::spawn_blocking(move || {
                crate::provider::local::image_import::import(&cache, &path, &|line| {
                    if !quiet {
                        eprintln!("image: {line}")
                    }
                })
            })
            .await
            .map_err(|e| anyhow::anyhow!("image import task: {e}"))??;
            emit(app, &img, || {
                format!("{} ready at {}", img.manifest.name, img.dir.display())
            });
        }
        ImageCommand::List => {
            let images = image::list(&cache);
            emit(app, &images, || {
                let rows: Vec<Vec<String>> = images
                    .iter()
                    .map(|i| {
                        let m = &i.manifest;
                        vec![
                            m.name.clone(),
                            if i.is_cloud() {
                                "imported".into()
                            } else if i.current {
                                "yes".into()
                            } else {
                                "no (old recipe)".into()
                            },
                            m.kernel.clone(),
                            if i.is_cloud() {
                                "on first boot".into()
                            } else {
                                m.postgres_majors
                                    .iter()
                                    .map(u32::to_string)
                                    .collect::<Vec<_>>()
                                    .join(",")
                            },
                            m.pgbackrest.clone(),
                            format!("{} MiB", m.base_bytes >> 20),
                            m.built_at.clone(),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "IMAGE",
                        "CURRENT",
                        "KERNEL",
                        "POSTGRES",
                        "PGBACKREST",
                        "SIZE",
                        "BUILT",
                    ],
                    &rows,
                )
            });
        }
    }
    Ok(())
}
