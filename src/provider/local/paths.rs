//! Where a run's local resources live: `<state>/local/<run>/`. Everything a run creates on this
//! host is under that directory (besides processes, which point back into it), so a run whose
//! journal write was lost can still be found and removed.

use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct RunPaths {
    pub root: PathBuf,
}

impl RunPaths {
    pub fn new(state_dir: &std::path::Path, run_id: &str) -> RunPaths {
        RunPaths {
            root: state_dir.join("local").join(run_id),
        }
    }
    pub fn net(&self) -> PathBuf {
        self.root.join("net")
    }
    pub fn hub_socket(&self) -> PathBuf {
        self.net().join("hub.sock")
    }
    pub fn hub_pid(&self) -> PathBuf {
        self.net().join("hub.pid")
    }
    pub fn firewall(&self) -> PathBuf {
        self.net().join("firewall.json")
    }
    pub fn vm(&self, node: &str) -> VmPaths {
        VmPaths {
            dir: self.root.join("vms").join(node),
        }
    }
    pub fn disk(&self, node: &str) -> PathBuf {
        self.root.join("disks").join(format!("{node}.qcow2"))
    }
}

#[derive(Debug, Clone)]
pub struct VmPaths {
    pub dir: PathBuf,
}

impl VmPaths {
    pub fn overlay(&self) -> PathBuf {
        self.dir.join("root.qcow2")
    }
    pub fn seed(&self) -> PathBuf {
        self.dir.join("seed.iso")
    }
    pub fn console(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    pub fn qmp(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }
    pub fn pid(&self) -> PathBuf {
        self.dir.join("qemu.pid")
    }
    pub fn nic(&self) -> PathBuf {
        self.dir.join("nic.sock")
    }
    pub fn ports(&self) -> PathBuf {
        self.dir.join("ports.json")
    }
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }
}
