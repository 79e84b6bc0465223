//! Run leases: at most one process drives a run at a time.
//!
//! A lease names its holder (random token, pid, host) and expires unless renewed. Another process
//! may take it over once it has expired, or at once when the holder is on this host and its pid
//! is gone (a crashed dbctl should not make the 3 a.m. `resume` wait).

use std::time::Duration;

use rusqlite::{OptionalExtension, params};

use super::{Journal, JournalError, Result, now_ms};

/// How long a lease lives without renewal, and how often the holder renews it.
pub const LEASE_TTL: Duration = Duration::from_secs(30);
pub const LEASE_RENEW_EVERY: Duration = Duration::from_secs(5);

/// Who holds a lease that we could not take.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LeaseHolder {
    pub pid: u32,
    pub host: String,
    pub expires_at: i64,
}

/// A held lease. Dropping it does not release it: call [`Journal::release`].
#[derive(Debug, Clone)]
pub struct Lease {
    pub run_id: String,
    pub token: String,
}

pub fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Whether a process with this pid exists on this host (signal 0 probes without signalling).
fn pid_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether a recorded holder still drives its run: the lease has not expired and, when the
/// holder is on this host, its process exists.
pub fn is_live(holder: &LeaseHolder) -> bool {
    holder.expires_at > now_ms() && (holder.host != this_host() || pid_alive(holder.pid))
}

impl Journal {
    /// Takes the run's lease for this process, or says who holds it.
    pub fn acquire(&self, run_id: &str) -> Result<std::result::Result<Lease, LeaseHolder>> {
        let token = hex::encode(rand::random::<[u8; 12]>());
        let me_pid = std::process::id();
        let me_host = this_host();
        self.write(|tx| {
            let now = now_ms();
            /// (token, pid, host, expires_at) of the current holder, all NULL when free.
            type Recorded = (Option<String>, Option<u32>, Option<String>, Option<i64>);
            let current: Option<Recorded> = tx
                .query_row(
                    "SELECT lease_token, lease_pid, lease_host, lease_expires_at FROM runs WHERE id = ?1",
                    [run_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            let Some((held, pid, host, expires)) = current else {
                return Err(JournalError::Corrupt(format!("no run {run_id}")));
            };
            if let (Some(_), Some(pid), Some(host), Some(expires)) = (held, pid, host, expires) {
                let holder_gone = host == me_host && pid != me_pid && !pid_alive(pid);
                if expires > now && !holder_gone {
                    return Ok(Err(LeaseHolder {
                        pid,
                        host,
                        expires_at: expires,
                    }));
                }
            }
            tx.execute(
                "UPDATE runs SET lease_token = ?2, lease_pid = ?3, lease_host = ?4, lease_expires_at = ?5
                 WHERE id = ?1",
                params![run_id, token, me_pid, me_host, now + LEASE_TTL.as_millis() as i64],
            )?;
            Ok(Ok(Lease {
                run_id: run_id.to_string(),
                token: token.clone(),
            }))
        })
        .inspect(|taken| {
            if let Ok(lease) = taken {
                self.fences()
                    .insert(lease.run_id.clone(), lease.token.clone());
            }
        })
    }

    /// Extends the lease; `false` when it was lost (taken over after expiring).
    pub fn renew(&self, lease: &Lease) -> Result<bool> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE runs SET lease_expires_at = ?3 WHERE id = ?1 AND lease_token = ?2",
                params![
                    lease.run_id,
                    lease.token,
                    now_ms() + LEASE_TTL.as_millis() as i64
                ],
            )?;
            Ok(n == 1)
        })
    }

    /// Gives the lease up. The fence goes with it: this process may write for the run again
    /// only as one that does not hold it (or after taking a new lease).
    pub fn release(&self, lease: &Lease) -> Result<()> {
        let mut fences = self.fences();
        if fences.get(&lease.run_id) == Some(&lease.token) {
            fences.remove(&lease.run_id);
        }
        drop(fences);
        self.write(|tx| {
            tx.execute(
                "UPDATE runs SET lease_token = NULL, lease_pid = NULL, lease_host = NULL,
                        lease_expires_at = NULL
                 WHERE id = ?1 AND lease_token = ?2",
                params![lease.run_id, lease.token],
            )?;
            Ok(())
        })
    }
}
