//! What the benchmarks share: the dbctl binary they drive, and medians.

use std::path::PathBuf;

/// The dbctl binary next to the running example (target/<profile>/dbctl), or $DBCTL_BIN.
pub fn dbctl() -> PathBuf {
    std::env::var_os("DBCTL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("own path");
            exe.parent()
                .and_then(|d| d.parent())
                .expect("target dir")
                .join("dbctl")
        })
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}
