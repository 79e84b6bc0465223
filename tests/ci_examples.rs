//! The CI examples (`examples/github-actions.yml`, `examples/gitlab-ci.yml`) only use flags
//! dbctl really accepts: every `dbctl …` command in them is parsed by dbctl's own clap types.

use clap::Parser;
use dbctl::cli::Cli;

/// The `dbctl …` commands of a workflow file, split into words (quotes removed; a pipe, a
/// redirection, `||`, `&&` or `)` ends a command). Comment lines are skipped.
fn dbctl_commands(text: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let mut rest = line;
        while let Some(at) = rest.find("dbctl ") {
            let after = &rest[at..];
            let end = after.find(['|', '>', ')', ';', '&']).unwrap_or(after.len());
            let words: Vec<String> = after[..end]
                .split_whitespace()
                .map(|w| w.trim_matches(|c| c == '"' || c == '\'').to_string())
                .collect();
            commands.push(words);
            rest = &after[end..];
        }
    }
    commands
}

/// The example file's text and its `dbctl` commands, each checked with dbctl's own parser.
fn parsed(file: &str) -> (String, Vec<Vec<String>>) {
    let path = format!("{}/examples/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let commands = dbctl_commands(&text);
    for words in &commands {
        if let Err(e) = Cli::try_parse_from(words) {
            panic!("{file}: {words:?} is not a dbctl command line:\n{e}");
        }
    }
    (text, commands)
}

fn check(file: &str, always: &str) {
    let (text, commands) = parsed(file);
    let sub = |name: &str| {
        commands
            .iter()
            .find(|w| w.get(1).map(String::as_str) == Some(name))
    };
    let create = sub("create").unwrap_or_else(|| panic!("{file} creates no database"));
    assert!(
        create.iter().any(|w| w == "--ttl"),
        "{file}: create without --ttl"
    );
    assert!(
        create.windows(2).any(|w| w == ["--output", "json"]),
        "{file}: create without --output json"
    );
    assert!(
        create.iter().any(|w| w == "--throwaway"),
        "{file}: a CI database without --throwaway waits for a first full backup it never needs"
    );
    // The password reaches the job through a password file, never through the log.
    assert!(
        text.contains(".connection.passfile") && !text.contains("--show-secrets"),
        "{file}: the job should get PGPASSFILE from create's JSON"
    );
    assert!(sub("destroy").is_some(), "{file} destroys nothing");
    // The destroy must sit where the CI system runs it also after a failed job.
    let cleanup = text
        .find(always)
        .unwrap_or_else(|| panic!("{file} has no {always}"));
    assert!(
        text[cleanup..].contains("dbctl destroy"),
        "{file}: destroy is not under {always}"
    );
}

#[test]
fn github_actions_example_parses_and_always_destroys() {
    check("github-actions.yml", "if: always()");
}

#[test]
fn gitlab_ci_example_parses_and_always_destroys() {
    check("gitlab-ci.yml", "after_script:");
}

#[test]
fn the_extractor_splits_commands_like_a_shell_would() {
    let c =
        dbctl_commands("  - x=$(dbctl connect \"$DB\" --output json | jq -r .uri)\n# dbctl nope\n");
    assert_eq!(c, vec![vec!["dbctl", "connect", "$DB", "--output", "json"]]);
}

#[test]
fn the_scheduled_gc_example_parses_and_runs_on_a_schedule() {
    let (text, commands) = parsed("github-actions-gc.yml");
    assert!(
        commands
            .iter()
            .any(|w| w.get(1).map(String::as_str) == Some("gc")
                && !w.iter().any(|a| a == "--dry-run")),
        "the example never runs gc for real"
    );
    assert!(
        text.contains("schedule:") && text.contains("cron:"),
        "no schedule"
    );
}
