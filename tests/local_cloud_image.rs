//! `--image PATH` on the local provider: a stock cloud image (no PostgreSQL, its own bootloader,
//! stock cloud-init) is imported, booted through the firmware, configured from the NoCloud
//! seed's network-config, and gets PostgreSQL from its own package sources through the relay.
//!
//! The image is `tests/fixtures/cloud-image/build.sh`'s imitation of Debian's official
//! genericcloud image (the official one cannot be downloaded here); `scripts/test` builds it
//! once and passes its path in `DBCTL_TEST_CLOUD_IMAGE`.

mod support;

use std::time::Instant;

use serde_json::Value;
use support::{Env, conn, qemu_processes, stderr};

fn fixture() -> String {
    let path = std::env::var("DBCTL_TEST_CLOUD_IMAGE").unwrap_or_default();
    assert!(
        !path.is_empty() && std::path::Path::new(&path).is_file(),
        "DBCTL_TEST_CLOUD_IMAGE must name the test cloud image: run scripts/test (it builds \
         one with tests/fixtures/cloud-image/build.sh)"
    );
    path
}

fn step<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {status}"))
}

/// Runs `cmd` on the node (OpenSSH hands the joined words to the remote shell, so one word).
fn ssh(env: &Env, name: &str, cmd: &str) -> String {
    let out = env.run(&["ssh", name, "--", cmd], None);
    assert!(out.status.success(), "{cmd}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn imported_cloud_image_boots_installs_postgres_and_runs() {
    let path = fixture();
    let env = Env::local();

    // Import: content-addressed, so a second import is the same image.
    let (code, imported) = env.json(&["image", "import", &path]);
    assert_eq!(code, 0, "{imported}");
    let name = imported["manifest"]["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("cloud-"), "{imported}");
    assert_eq!(imported["manifest"]["boot"], "firmware");
    assert_eq!(
        imported["manifest"]["postgres_majors"],
        serde_json::json!([])
    );
    let (_, again) = env.json(&["image", "import", &path]);
    assert_eq!(again["manifest"]["name"], name.as_str());
    let (_, list) = env.json(&["image", "list"]);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|i| i["manifest"]["name"] == name.as_str() && i["current"] == false),
        "{list}"
    );

    // Create from the file path: the journal keeps the import's name, not the path.
    let t0 = Instant::now();
    let (code, created) = env.json(&["create", "cloudy", "--image", &path, "--disk-gib", "1"]);
    assert_eq!(code, 0, "{created}");
    eprintln!(
        "imported image: time to RUNNING {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let run = created["run"]["id"].as_str().unwrap().to_string();
    let (_, st) = env.json(&["status", "cloudy"]);
    let spec_json: String = env
        .journal()
        .read(|c| Ok(c.query_row("SELECT spec FROM runs WHERE id = ?1", [&run], |r| r.get(0))?))
        .unwrap();
    let spec: Value = serde_json::from_str(&spec_json).unwrap();
    assert_eq!(spec["image"], name.as_str(), "{spec}");
    let packages = step(&st, "deploy.packages.primary");
    assert_eq!(packages["outputs"]["installed"], true, "{packages}");
    for s in st["steps"].as_array().unwrap() {
        let ms = s["finished_at"].as_i64().unwrap_or(0) - s["started_at"].as_i64().unwrap_or(0);
        eprintln!("  {:<32} {:>7} ms", s["name"].as_str().unwrap_or(""), ms);
    }

    // It is the stock image, not dbctl's: no dbctl cloud-init tuning, grub installed,
    // PostgreSQL from the package sources today, reached through the relay only.
    let facts = ssh(
        &env,
        "cloudy",
        "test ! -e /etc/cloud/cloud.cfg.d/99-dbctl.cfg && echo stock; \
         test -d /boot/grub && echo grub; \
         dpkg-query -W -f '${Status}\\n' postgresql-15; \
         getent hosts deb.debian.org; \
         df --output=size -BG / | tail -1",
    );
    let lines: Vec<&str> = facts.lines().map(str::trim).collect();
    assert_eq!(lines[0], "stock", "{facts}");
    assert_eq!(lines[1], "grub", "{facts}");
    assert_eq!(lines[2], "install ok installed", "{facts}");
    assert!(lines[3].starts_with("10.0.2.101 "), "{facts}");
    // cloud-init's growpart grew the root into the 8 GiB overlay.
    let root_gib: u32 = lines[4].trim_end_matches('G').trim().parse().unwrap();
    assert!(root_gib >= 7, "{facts}");

    // The whole flow ran on it: PostgreSQL over verified TLS with checksums, the register stage
    // (exporters and the first backup are what the flow checked before RUNNING).
    let pg = conn(&env, &["cloudy"]).client().await.unwrap();
    let row = pg
        .query_one("SELECT version(), current_setting('data_checksums')", &[])
        .await
        .unwrap();
    let version: String = row.get(0);
    assert!(version.starts_with("PostgreSQL 15."), "{version}");
    assert_eq!(row.get::<_, String>(1), "on");
    let (_, backups) = env.json(&["backup", "list", "cloudy"]);
    assert_eq!(
        backups["backups"].as_array().map(Vec::len),
        Some(1),
        "{backups}"
    );

    let (code, _) = env.json(&["destroy", "cloudy"]);
    assert_eq!(code, 0);
    assert_eq!(qemu_processes(&run), 0);
    assert!(!env.path(&format!("state/local/{run}")).exists());
}
