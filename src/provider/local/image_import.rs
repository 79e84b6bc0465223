//! `dbctl image import PATH` (and `dbctl create --image PATH`): a user-supplied cloud image —
//! such as Debian's or Ubuntu's official genericcloud qcow2 — copied into the image cache.
//!
//! VMs back onto the copy, not the user's file: the user may move or replace theirs, and a run
//! resumed next week must boot the same bytes. The copy is named by the source's SHA-256, so
//! importing the same file twice is one image and `create --image PATH` is repeatable.

use std::io::Read;
use std::path::Path;
use std::process::Command;

use super::image::{self, Boot, Image, ImageError, ImportSource, Manifest, io, sha256_file};

/// The disk VMs of an imported image get (at least): room for PostgreSQL's packages beside the
/// image's own few hundred MiB. The overlay is sparse; cloud-init's growpart fills it.
pub const MIN_ROOT_BYTES: u64 = 8 << 30;

/// What `qemu-img info` says of a candidate image.
#[derive(Debug)]
pub struct Inspected {
    pub format: String,
    pub virtual_bytes: u64,
}

/// True when `image` (the spec's `--image`) names a file rather than an image in the cache.
pub fn is_path(image: &str) -> bool {
    image.contains('/') || image.ends_with(".qcow2") || image.ends_with(".img")
}

/// Checks that `path` is a disk image dbctl can boot as a cloud image: qcow2 or raw, without a
/// backing file, and (raw) with a boot sector. Reads only; the message names what is wrong.
pub fn inspect(path: &Path) -> Result<Inspected, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a file"));
    }
    // -U: inspecting must work even while a VM has the file open.
    let out = Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(path)
        .output()
        .map_err(|e| format!("cannot run qemu-img: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{shown} is not a disk image: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let info: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("qemu-img info: {e}"))?;
    let format = info["format"].as_str().unwrap_or("").to_string();
    if format != "qcow2" && format != "raw" {
        return Err(format!(
            "{shown} is a {format:?} image; dbctl imports qcow2 or raw cloud images"
        ));
    }
    if info.get("backing-filename").is_some() {
        return Err(format!(
            "{shown} has a backing file; import a standalone image (qemu-img convert -O qcow2 it first)"
        ));
    }
    // Every file is a valid "raw" image to qemu-img: insist on an MBR/GPT boot sector.
    if format == "raw" {
        let mut sector = Vec::with_capacity(512);
        std::fs::File::open(path)
            .and_then(|f| f.take(512).read_to_end(&mut sector))
            .map_err(|e| format!("{shown}: {e}"))?;
        if sector.len() < 512 || sector[510..] != [0x55, 0xAA] {
            return Err(format!(
                "{shown} is not a bootable disk image (no boot sector)"
            ));
        }
    }
    Ok(Inspected {
        format,
        virtual_bytes: info["virtual-size"].as_u64().unwrap_or(0),
    })
}

/// Imports `path` unless an image with its content exists. Blocking: run it off the runtime.
pub fn import(cache: &Path, path: &Path, progress: &dyn Fn(&str)) -> Result<Image, ImageError> {
    let inspected = inspect(path).map_err(ImageError::Invalid)?;
    progress(&format!("checksumming {}", path.display()));
    let (sha256, _) = sha256_file(path)?;
    let name = format!("cloud-{}", &sha256[..12]);
    if let Some(img) = image::list(cache)
        .into_iter()
        .find(|i| i.manifest.name == name)
    {
        progress(&format!("{} is already imported as {name}", path.display()));
        return Ok(img);
    }
    let started = std::time::Instant::now();
    let images = cache.join("images");
    let staging = images.join(format!(".importing-{name}"));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
    progress(&format!("importing {} as {name}", path.display()));
    let base = staging.join("base.qcow2");
    let out = Command::new("qemu-img")
        .args(["convert", "-U", "-f", &inspected.format, "-O", "qcow2"])
        .arg(path)
        .arg(&base)
        .output()
        .map_err(io(&base))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(ImageError::Failed(format!(
            "qemu-img convert: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let (base_sha256, base_bytes) = sha256_file(&base)?;
    let manifest = Manifest {
        name: name.clone(),
        recipe_hash: String::new(),
        distro: format!(
            "imported: {}",
            path.file_name().unwrap_or_default().to_string_lossy()
        ),
        kernel: String::new(),
        postgres_majors: Vec::new(),
        pgbackrest: String::new(),
        base_sha256,
        base_bytes,
        built_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        build_secs: started.elapsed().as_secs(),
        boot: Boot::Firmware,
        source: Some(ImportSource {
            path: std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
            sha256,
        }),
        virtual_bytes: inspected.virtual_bytes,
    };
    let text = serde_json::to_string_pretty(&manifest).expect("manifest serializes");
    std::fs::write(staging.join("manifest.json"), text).map_err(io(&staging))?;
    let dir = images.join(&name);
    let _ = std::fs::remove_dir_all(&dir);
    // As for built images: the rename makes the image appear whole or not at all.
    std::fs::rename(&staging, &dir).map_err(io(&dir))?;
    progress(&format!(
        "imported {name} in {} s",
        started.elapsed().as_secs()
    ));
    Ok(Image {
        dir,
        manifest,
        current: false,
    })
}
