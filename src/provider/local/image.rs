//! The base image local VMs boot: Debian 12 with a kernel, systemd, OpenSSH, cloud-init
//! (NoCloud), sudo and PostgreSQL server binaries — a "golden image", built by dbctl itself.
//!
//! The recipe (`templates/image/`) is compiled into the binary; its hash names the image, so an
//! image is rebuilt only when missing or when the recipe changes. Images live in
//! `$XDG_CACHE_HOME/dbctl/images/debian12-<hash>/` with a `manifest.json`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const BUILD_SH: &str = include_str!("../../../templates/image/build.sh");
const CLOUD_CFG: &str = include_str!("../../../templates/image/99-dbctl.cfg");
const INIT: &str = include_str!("../../../templates/image/init");

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("no base image for this dbctl (recipe {0}); build it with: sudo dbctl image build")]
    Missing(String),
    #[error("building the image needs root (debootstrap and chroot); run: sudo dbctl image build")]
    NotRoot,
    #[error("building the image needs {0} (apt-get install {1})")]
    MissingTool(&'static str, &'static str),
    #[error("{0}")]
    Invalid(String),
    #[error("image build failed: {0}")]
    Failed(String),
    #[error("image {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What an image holds; written last, so an image without a manifest is not an image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub recipe_hash: String,
    pub distro: String,
    pub kernel: String,
    pub postgres_majors: Vec<u32>,
    /// pgBackRest version (empty for images built before backups joined the recipe).
    #[serde(default)]
    pub pgbackrest: String,
    pub base_sha256: String,
    pub base_bytes: u64,
    pub built_at: String,
    pub build_secs: u64,
    /// How a VM starts from it (absent in manifests of dbctl-built images: `kernel`).
    #[serde(default)]
    pub boot: Boot,
    /// For an imported image: the file it was imported from, and that file's SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ImportSource>,
    /// The disk size the image declares (0 in manifests written before imports existed).
    #[serde(default)]
    pub virtual_bytes: u64,
}

/// How a VM boots an image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Boot {
    /// dbctl's own image: QEMU loads the kernel and tiny initrd beside the disk; addresses come
    /// from the kernel command line and only cloud-init's init stage runs.
    #[default]
    Kernel,
    /// A user-supplied cloud image: the firmware boots the disk's own bootloader, cloud-init
    /// runs all its stages and configures the NICs from the seed's network-config, and
    /// PostgreSQL is installed from the image's package sources on first boot.
    Firmware,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportSource {
    pub path: PathBuf,
    pub sha256: String,
}

/// A built or imported image on disk.
#[derive(Debug, Clone, Serialize)]
pub struct Image {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// Built from this binary's recipe (the one `create` boots by default).
    pub current: bool,
}

impl Image {
    pub fn base(&self) -> PathBuf {
        self.dir.join("base.qcow2")
    }
    pub fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }
    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.img")
    }
    /// Imported cloud image: PostgreSQL is installed on first boot, not carried.
    pub fn is_cloud(&self) -> bool {
        self.manifest.boot == Boot::Firmware
    }
}

/// The recipe's hash: build script, cloud-init config and initramfs init, in that order.
pub fn recipe_hash() -> String {
    let mut h = Sha256::new();
    for part in [BUILD_SH, CLOUD_CFG, INIT] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex::encode(h.finalize())
}

fn image_name(hash: &str) -> String {
    format!("debian12-{}", &hash[..12])
}

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Every built image under `cache`, newest first.
pub fn list(cache: &Path) -> Vec<Image> {
    let current = recipe_hash();
    let mut out: Vec<Image> = std::fs::read_dir(cache.join("images"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path().join("manifest.json")).ok()?;
            let manifest: Manifest = serde_json::from_str(&text).ok()?;
            Some(Image {
                dir: e.path(),
                current: manifest.boot == Boot::Kernel && manifest.recipe_hash == current,
                manifest,
            })
        })
        .collect();
    out.sort_by(|a, b| b.manifest.built_at.cmp(&a.manifest.built_at));
    out
}

/// The image this binary boots, if it has been built.
pub fn current(cache: &Path) -> Result<Image, ImageError> {
    list(cache)
        .into_iter()
        .find(|i| i.current)
        .ok_or_else(|| ImageError::Missing(image_name(&recipe_hash())))
}

fn require_tool(cmd: &'static str, package: &'static str) -> Result<(), ImageError> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false);
    if found {
        Ok(())
    } else {
        Err(ImageError::MissingTool(cmd, package))
    }
}

/// The Debian mirror this host's apt uses (the only one reachable in closed networks).
fn host_mirror() -> String {
    let sources =
        std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    sources
        .lines()
        .find_map(|l| {
            l.strip_prefix("URIs:")
                .map(|u| u.split_whitespace().next().unwrap_or("").to_string())
        })
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "http://deb.debian.org/debian".into())
}

pub(super) fn sha256_file(path: &Path) -> Result<(String, u64), ImageError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(io(path))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// Builds the current recipe's image unless it exists (or `force`). `progress` gets one line
/// per stage. Blocking: run it off the async runtime.
pub fn build(cache: &Path, force: bool, progress: &dyn Fn(&str)) -> Result<Image, ImageError> {
    if !force && let Ok(img) = current(cache) {
        progress(&format!("image {} is up to date", img.manifest.name));
        return Ok(img);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(ImageError::NotRoot);
    }
    for (cmd, pkg) in [
        ("debootstrap", "debootstrap"),
        ("qemu-img", "qemu-utils"),
        ("mkfs.ext4", "e2fsprogs"),
        ("cpio", "cpio"),
    ] {
        require_tool(cmd, pkg)?;
    }
    let hash = recipe_hash();
    let name = image_name(&hash);
    let images = cache.join("images");
    let work = cache.join("image-work");
    let files = work.join("files");
    let staging = images.join(format!(".building-{name}"));
    for d in [&images, &files] {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::write(files.join("99-dbctl.cfg"), CLOUD_CFG).map_err(io(&files))?;
    std::fs::write(files.join("init"), INIT).map_err(io(&files))?;
    let script = work.join("build.sh");
    std::fs::write(&script, BUILD_SH).map_err(io(&script))?;

    let started = std::time::Instant::now();
    progress(&format!("building image {name}"));
    let mut child = Command::new("bash")
        .arg(&script)
        .env("WORK", &work)
        .env("OUT", &staging)
        .env("FILES", &files)
        .env("MIRROR", host_mirror())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io(&script))?;
    let stderr = child.stderr.take().expect("piped");
    let err_lines = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    for line in BufReader::new(child.stdout.take().expect("piped"))
        .lines()
        .map_while(Result::ok)
    {
        progress(&line);
    }
    let status = child.wait().map_err(io(&script))?;
    let errors = err_lines.join().unwrap_or_default();
    if !status.success() {
        let tail = errors
            .iter()
            .rev()
            .take(5)
            .rev()
            .cloned()
            .collect::<Vec<_>>()
            .join(" | ");
        return Err(ImageError::Failed(format!("{status}: {tail}")));
    }
    let env = std::fs::read_to_string(staging.join("image.env")).map_err(io(&staging))?;
    let field = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or("")
            .trim()
            .to_string()
    };
    let (base_sha256, base_bytes) = sha256_file(&staging.join("base.qcow2"))?;
    let manifest = Manifest {
        name: name.clone(),
        recipe_hash: hash,
        distro: "debian 12 (bookworm)".into(),
        kernel: field("KERNEL"),
        postgres_majors: field("POSTGRES_MAJORS")
            .split_whitespace()
            .filter_map(|m| m.parse().ok())
            .collect(),
        pgbackrest: field("PGBACKREST"),
        base_sha256,
        base_bytes,
        built_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        build_secs: started.elapsed().as_secs(),
        boot: Boot::Kernel,
        source: None,
        virtual_bytes: 4 << 30,
    };
    let text = serde_json::to_string_pretty(&manifest).expect("manifest serializes");
    std::fs::write(staging.join("manifest.json"), text).map_err(io(&staging))?;
    let dir = images.join(&name);
    let _ = std::fs::remove_dir_all(&dir);
    // The rename makes the finished image appear at once; a crash before it leaves only staging.
    std::fs::rename(&staging, &dir).map_err(io(&dir))?;
    progress(&format!("image {name} built in {} s", manifest.build_secs));
    Ok(Image {
        dir,
        manifest,
        current: true,
    })
}
