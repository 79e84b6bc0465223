//! `dbctl completions SHELL` and `dbctl man`: shell completions and man pages generated from
//! the clap definitions themselves, so they can never drift from the flags dbctl accepts.
//!
//! Both run before the config and the journal are looked at: `scripts/setup` installs them on a
//! machine that may have neither, and a broken config must not break tab completion.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, ValueEnum};

use super::Cli;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
#[command(after_long_help = "Where scripts/setup installs them:\n  \
    bash  ~/.local/share/bash-completion/completions/dbctl\n  \
    zsh   ~/.local/share/zsh/site-functions/_dbctl  (that directory must be on $fpath)\n  \
    fish  ~/.config/fish/completions/dbctl.fish\n\n\
    Examples:\n  source <(dbctl completions bash)\n  \
    dbctl completions zsh > ~/.local/share/zsh/site-functions/_dbctl")]
pub struct CompletionsArgs {
    /// The shell to generate a completion script for
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, Args)]
#[command(after_long_help = "Examples:\n  dbctl man | man -l -\n  \
    dbctl man --dir ~/.local/share/man/man1   # dbctl.1 and dbctl-COMMAND.1 for every command")]
pub struct ManArgs {
    /// Write dbctl.1 and one dbctl-COMMAND.1 per command into DIR instead of printing dbctl.1
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// The completion script for `shell`.
pub fn completion_script(shell: Shell) -> Vec<u8> {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut public_command(), "dbctl", &mut out);
    out
}

/// `dbctl` without its hidden internal commands (`local-hub`, `relay`): clap_complete's static
/// scripts offer hidden subcommands, and nobody should be offered those.
fn public_command() -> clap::Command {
    let full = Cli::command();
    let mut public = clap::Command::new("dbctl").version(env!("CARGO_PKG_VERSION"));
    if let Some(about) = full.get_about() {
        public = public.about(about.clone());
    }
    for arg in full.get_arguments() {
        public = public.arg(arg.clone());
    }
    for sub in full.get_subcommands().filter(|s| !s.is_hide_set()) {
        public = public.subcommand(sub.clone());
    }
    public
}

/// Every man page: `dbctl.1` first, then `dbctl-COMMAND.1` (and `dbctl-COMMAND-SUB.1`) for
/// each visible command, as (file name, roff text).
pub fn man_pages() -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = Cli::command();
    // Propagates the global flags (--journal, --output, …) into every subcommand's page.
    cmd.build();
    let mut pages = Vec::new();
    collect_pages(&cmd, "dbctl", &mut pages)?;
    Ok(pages)
}

fn collect_pages(
    cmd: &clap::Command,
    name: &str,
    pages: &mut Vec<(String, Vec<u8>)>,
) -> std::io::Result<()> {
    let mut out = Vec::new();
    // clap names are `&'static str` (without its `string` feature); a handful of short names
    // leaked once by a process that prints them and exits.
    let page = cmd.clone().name(&*name.to_string().leak());
    clap_mangen::Man::new(page).render(&mut out)?;
    pages.push((format!("{name}.1"), out));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        collect_pages(sub, &format!("{name}-{}", sub.get_name()), pages)?;
    }
    Ok(())
}

fn write_pages(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    for (file, text) in man_pages()? {
        let path = dir.join(&file);
        std::fs::write(&path, text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

pub fn run_completions(args: CompletionsArgs) -> anyhow::Result<()> {
    std::io::stdout().write_all(&completion_script(args.shell))?;
    Ok(())
}

pub fn run_man(args: ManArgs) -> anyhow::Result<()> {
    match args.dir {
        Some(dir) => write_pages(&dir),
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut out)?;
            std::io::stdout().write_all(&out)?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visible_commands() -> Vec<String> {
        Cli::command()
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| s.get_name().to_string())
            .collect()
    }

    #[test]
    fn every_shell_script_names_every_command() {
        let commands = visible_commands();
        assert!(commands.contains(&"create".to_string()), "{commands:?}");
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let script = String::from_utf8(completion_script(shell)).unwrap();
            assert!(!script.trim().is_empty(), "{shell:?}");
            for c in &commands {
                assert!(script.contains(c.as_str()), "{shell:?} lacks {c}");
            }
            assert!(
                !script.contains("local-hub"),
                "{shell:?} offers a hidden command"
            );
        }
    }

    #[test]
    fn bash_accepts_the_bash_script() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dbctl.bash");
        std::fs::write(&path, completion_script(Shell::Bash)).unwrap();
        let out = std::process::Command::new("bash")
            .arg("-n")
            .arg(&path)
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "bash -n: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn the_man_page_names_every_command_and_each_has_its_own() {
        let pages = man_pages().unwrap();
        let (first, main) = &pages[0];
        assert_eq!(first, "dbctl.1");
        let main = String::from_utf8_lossy(main);
        assert!(
            main.starts_with(".ie") || main.contains(".TH dbctl"),
            "{main}"
        );
        for c in visible_commands() {
            assert!(main.contains(&c), "dbctl.1 lacks {c}");
            assert!(
                pages.iter().any(|(f, _)| *f == format!("dbctl-{c}.1")),
                "no page for {c}"
            );
        }
        let create = &pages.iter().find(|(f, _)| f == "dbctl-create.1").unwrap().1;
        let create = String::from_utf8_lossy(create);
        for flag in ["idempotency", "ttl", "journal"] {
            assert!(create.contains(flag), "dbctl-create.1 lacks --{flag}");
        }
        assert!(main.contains("Exit codes"), "the exit codes are in dbctl.1");
    }
}
