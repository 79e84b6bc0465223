//! psql (libpq, as a user's client would connect), shared by the failover benchmark and the HA
//! test (`tests/local_ha.rs` includes this file by path).

/// Runs `sql` through `uri`: psql's trimmed output, or its trimmed error.
pub fn psql(uri: &str, sql: &str) -> Result<String, String> {
    let out = std::process::Command::new("psql")
        .args([
            uri,
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .expect("run psql");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}
