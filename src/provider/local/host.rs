//! Facts about the host: accelerator, free ports, memory and disk headroom.

use std::path::Path;

/// KVM when the CPU advertises hardware virtualization and /dev/kvm opens; TCG otherwise.
/// (Some hosts expose a /dev/kvm that cannot run ordinary guests, e.g. PVM without vmx/svm.)
pub fn accelerator(configured: &str) -> &'static str {
    match configured {
        "kvm" => "kvm",
        "tcg" => "tcg",
        _ => {
            let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            let hw = cpu
                .lines()
                .any(|l| l.starts_with("flags") && (l.contains(" vmx") || l.contains(" svm")));
            let dev = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_ok();
            if hw && dev { "kvm" } else { "tcg" }
        }
    }
}

/// A TCP port on 127.0.0.1 free right now (the OS picks it).
pub fn free_port() -> std::io::Result<u16> {
    Ok(free_ports(1)?[0])
}

/// `n` distinct TCP ports on 127.0.0.1, free right now. Every listener is held until all are
/// picked: released one by one, the OS may hand the same port out twice (seen here: QEMU then
/// refuses both forwarding rules on it).
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let held = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

/// MemAvailable in MiB.
pub fn mem_available_mib() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = info
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024)
}

/// Free space in MiB on the filesystem holding `path` (or its nearest existing parent).
pub fn disk_free_mib(path: &Path) -> Option<u64> {
    let mut p = path;
    while !p.exists() {
        p = p.parent()?;
    }
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs fills the zeroed struct; the path is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0)
        .then(|| st.f_bavail as u64 * st.f_frsize as u64 / (1 << 20))
}

#[cfg(test)]
mod tests {
    #[test]
    fn free_ports_are_distinct() {
        for _ in 0..50 {
            let mut p = super::free_ports(4).unwrap();
            p.sort();
            p.dedup();
            assert_eq!(p.len(), 4, "{p:?}");
        }
    }
}
