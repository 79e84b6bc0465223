//! `provision.disk.<node>`: the data volume, a qcow2 file of the requested size (sparse).

use std::path::PathBuf;
use std::process::Command;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::io_err;
use crate::provider::local::RunPaths;
use crate::saga::{Step, StepCtx, StepError};

pub struct DiskStep {
    pub paths: RunPaths,
    pub node: String,
    pub size_gib: u32,
}

impl DiskStep {
    fn file(&self) -> PathBuf {
        self.paths.disk(&self.node)
    }
}

#[async_trait]
impl Step for DiskStep {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let file = self.file();
        ctx.resource_intent("volume", &self.node, None)?;
        if !file.exists() {
            let dir = file.parent().expect("disk path has a parent");
            std::fs::create_dir_all(dir).map_err(io_err(dir.display()))?;
            // Created under a temporary name and renamed: a crash never leaves a half-made disk
            // that a retry would adopt.
            let tmp = file.with_extension("qcow2.tmp");
            let out = Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2"])
                .arg(&tmp)
                .arg(format!("{}G", self.size_gib))
                .output()
                .map_err(io_err("qemu-img"))?;
            if !out.status.success() {
                return Err(StepError::Permanent(format!(
                    "qemu-img create: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            std::fs::rename(&tmp, &file).map_err(io_err(file.display()))?;
        }
        ctx.resource_created("volume", &self.node, &file.display().to_string())?;
        Ok(json!({ "file": file, "size_gib": self.size_gib }))
    }

    async fn rollback(&self, ctx: &StepCtx) -> Result<(), StepError> {
        let file = self.file();
        for f in [file.clone(), file.with_extension("qcow2.tmp")] {
            if f.exists() {
                std::fs::remove_file(&f).map_err(io_err(f.display()))?;
            }
        }
        ctx.resource_deleted("volume", &self.node)
    }
}
