//! `dbctl image build|list`: the local provider's base image.

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
    /// List built images
    List,
}

impl From<ImageError> for CliError {
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::NotRoot | ImageError::MissingTool(..) | ImageError::Missing(_) => {
                ValidationError::new("image", e.to_string()).into()
            }
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
        ImageCommand::List => {
            let images = image::list(&cache);
            emit(app, &images, || {
                let rows: Vec<Vec<String>> = images
                    .iter()
                    .map(|i| {
                        let m = &i.manifest;
                        vec![
                            m.name.clone(),
                            if i.current {
                                "yes".into()
                            } else {
                                "no (old recipe)".into()
                            },
                            m.kernel.clone(),
                            m.postgres_majors
                                .iter()
                                .map(u32::to_string)
                                .collect::<Vec<_>>()
                                .join(","),
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
