//! Results of remote commands, and quoting for the remote shell.

/// What a remote command produced.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    /// `None` when the process was killed by a signal (see `signal`).
    pub status: Option<u32>,
    pub signal: Option<String>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The last lines of stderr (or stdout when stderr is empty), for error messages.
    pub fn tail(&self, lines: usize) -> String {
        let src = if self.stderr.iter().any(|b| !b.is_ascii_whitespace()) {
            &self.stderr
        } else {
            &self.stdout
        };
        let text = String::from_utf8_lossy(src);
        let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        all[all.len().saturating_sub(lines)..].join(" | ")
    }
}

/// Exit status of a locked command whose lock stayed taken: an earlier attempt of the same
/// step is still running on the node.
pub const STEP_LOCK_BUSY: u32 = 75;

/// The remote command line for `script`: run by bash, killed with its whole process group
/// after `secs` (`timeout` signals its group; closing the SSH channel alone would leave it
/// running). With `lock`, the script runs only while it holds that lock file: a retry whose
/// earlier attempt is still alive on the node (its SSH channel dropped, the process not) waits
/// for it instead of running beside it (two `apt-get`s, an `rm -rf` under a live
/// `pg_basebackup`), and gives up with [`STEP_LOCK_BUSY`] shortly before its own limit.
pub fn remote_command(script: &str, secs: u64, lock: Option<&str>) -> String {
    let secs = secs.max(1);
    let bash = format!("bash -c {}", shell_quote(script));
    match lock {
        Some(lock) => format!(
            "timeout -s KILL {secs} flock -E {STEP_LOCK_BUSY} -w {} {} {bash}",
            secs.saturating_sub(1).max(1),
            shell_quote(lock)
        ),
        None => format!("timeout -s KILL {secs} {bash}"),
    }
}

/// Quotes `s` as one word for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spawn(cmd: &str) -> std::process::Child {
        std::process::Command::new("bash")
            .arg("-c")
            .arg(cmd)
            .spawn()
            .unwrap()
    }

    #[test]
    fn two_attempts_of_one_step_never_run_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("step.lock");
        let log = dir.path().join("log");
        let script = format!(
            "echo start >> {log}; sleep 0.4; echo end >> {log}",
            log = shell_quote(log.to_str().unwrap())
        );
        let cmd = remote_command(&script, 10, Some(lock.to_str().unwrap()));
        let (mut a, mut b) = (spawn(&cmd), spawn(&cmd));
        assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text, "start\nend\nstart\nend\n", "the attempts overlapped");
    }

    #[test]
    fn a_retry_gives_up_with_its_own_code_while_the_earlier_attempt_lives() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("step.lock");
        let lock = lock.to_str().unwrap();
        let mut holder = spawn(&remote_command("sleep 4", 10, Some(lock)));
        std::thread::sleep(std::time::Duration::from_millis(300));
        let retry = std::process::Command::new("bash")
            .arg("-c")
            .arg(remote_command("echo ran", 3, Some(lock)))
            .output()
            .unwrap();
        assert_eq!(retry.status.code(), Some(STEP_LOCK_BUSY as i32));
        assert!(retry.stdout.is_empty(), "the retry must not run its script");
        holder.kill().unwrap();
        let _ = holder.wait();
    }

    #[test]
    fn quoting_survives_a_real_shell() {
        let nasty = "a'b \"c\" $(rm -rf /) `x` \\ \n end";
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", shell_quote(nasty)))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), nasty);
    }
}
