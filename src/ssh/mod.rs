//! SSH to the nodes, on russh: key auth with dbctl's own key, host keys verified against the key
//! learnt out of band (the VM's serial console, the cloud's console output) — never
//! trust-on-first-use.

mod exec;
mod keys;
mod session;

pub use exec::{ExecOutput, STEP_LOCK_BUSY, shell_quote};
pub use keys::{ClientKey, host_key_from_console, parse_public_key};
pub use session::{SshError, SshSession, SshTarget};
