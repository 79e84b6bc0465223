//! Benchmark: time-to-RUNNING, per step and per stage, median of N runs.
//!
//!   cargo build && cargo run --example time_to_running -- 3          # one node
//!   cargo build && cargo run --example time_to_running -- 3 --ha     # a 3-node Patroni cluster
//!   cargo build && cargo run --example time_to_running -- 3 --image PATH   # a cloud image
//!   cargo build && cargo run --example time_to_running -- 3 --throwaway    # no backups, exporters
//!   eval "$(scripts/ec2-twin start)"
//!   cargo build && cargo run --example time_to_running -- 3 --aws "$DBCTL_TWIN_AMI" [--ha]
//!                                                           # the aws provider on the EC2 twin
//!
//! A stage's time is its wall time in the run (first step started to last step finished):
//! steps of a stage run concurrently, so their sum would count the same seconds twice.
//!
//! Each run is `dbctl create` in a fresh journal (one VM), timed from the journal's step records,
//! then destroyed. Runs go one after another so they do not compete for CPU. Uses the dbctl
//! binary next to this example (target/<profile>/dbctl) or $DBCTL_BIN.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;
use support::{dbctl, median};

use serde_json::Value;

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    let args: Vec<String> = std::env::args().collect();
    let ha = args.iter().any(|a| a == "--ha");
    let throwaway = args.iter().any(|a| a == "--throwaway");
    // An imported cloud image instead of dbctl's own (boots via GRUB, installs PostgreSQL).
    let image = args
        .iter()
        .position(|a| a == "--image")
        .and_then(|i| args.get(i + 1).cloned());
    // The aws provider against $AWS_ENDPOINT_URL (the EC2 twin), with this AMI.
    let aws = args
        .iter()
        .position(|a| a == "--aws")
        .and_then(|i| args.get(i + 1).cloned());
    if aws.is_some() {
        assert!(
            std::env::var_os("AWS_ENDPOINT_URL").is_some(),
            "--aws needs the twin's environment: eval \"$(scripts/ec2-twin start)\""
        );
    }
    let bin = dbctl();
    let mut per_stage: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut per_step: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut totals = Vec::new();
    for i in 0..runs {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = dir.path().join("state/journal.db");
        let config = dir.path().join("config.toml");
        let text = if aws.is_some() {
            "[defaults]\nprovider = \"aws\"\n[aws]\nssh_cidr = \"127.0.0.1/32\"\nssh_wait_secs = 300\n"
        } else {
            "[defaults]\nprovider = \"local\"\n"
        };
        std::fs::write(&config, text).expect("config");
        let run = |args: &[&str]| {
            Command::new(&bin)
                .args(args)
                .env("DBCTL_JOURNAL", &journal)
                .env("DBCTL_CONFIG", &config)
                .output()
                .expect("run dbctl")
        };
        let t0 = Instant::now();
        let name = format!("bench{i}");
        let mut args = vec!["create", name.as_str(), "--output", "json"];
        if ha {
            args.push("--ha");
        }
        if throwaway {
            args.push("--throwaway");
        }
        if let Some(image) = aws.as_ref().or(image.as_ref()) {
            args.extend(["--image", image.as_str()]);
        }
        let out = run(&args);
        let total = t0.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        let mut stages: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for s in v["steps"].as_array().unwrap() {
            let (a, b) = (
                s["started_at"].as_i64().unwrap(),
                s["finished_at"].as_i64().unwrap(),
            );
            let name = s["name"].as_str().unwrap();
            per_step
                .entry(name.to_string())
                .or_default()
                .push((b - a) as f64 / 1000.0);
            let stage = name.split('.').next().unwrap_or(name).to_string();
            let span = stages.entry(stage).or_insert((a, b));
            *span = (span.0.min(a), span.1.max(b));
        }
        for (stage, (a, b)) in stages {
            per_stage
                .entry(stage)
                .or_default()
                .push((b - a) as f64 / 1000.0);
        }
        totals.push(total);
        println!("run {}: RUNNING after {total:.1} s", i + 1);
        if let Some(r) = v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "setup.verify-replication")
        {
            println!("  replication when verified: {}", r["outputs"]["replicas"]);
        }
        assert!(
            run(&["destroy", &format!("bench{i}")]).status.success(),
            "destroy failed"
        );
    }
    println!("\nmedian of {runs} runs (seconds):");
    for (step, times) in &per_step {
        println!("  {step:<28} {:>6.1}", median(times.clone()));
    }
    println!("\nstages, wall time (median of {runs}):");
    for (stage, times) in &per_stage {
        println!("  {stage:<28} {:>6.1}", median(times.clone()));
    }
    println!("  {:<28} {:>6.1}", "TOTAL (create command)", median(totals));
}
