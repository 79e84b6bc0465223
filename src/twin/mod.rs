//! The EC2 twin: a local stand-in for EC2 that dbctl reaches through the ordinary
//! `AWS_ENDPOINT_URL`, with no code path in dbctl that knows it is there.
//!
//! moto_server keeps serving the EC2 API (state, ids, tags, errors); the twin is an HTTP proxy
//! in front of it ([`proxy`]) that lets every request through and acts on some once moto has
//! answered them ([`actions`]): a RunInstances of the twin AMI ([`ami`]) boots a real VM per
//! instance ([`machine`], built from the local provider's QEMU machinery), seeded with the
//! request's user-data; Stop/Start/Reboot/TerminateInstances act on the VMs; GetConsoleOutput
//! returns the VM's serial console; security groups are enforced on the VPC networks and the
//! public addresses ([`security`]); Create/Attach/Detach/DeleteVolume hot-plug NVMe disks
//! named as EBS names them ([`volume`]); each VM reaches an IMDSv2 at 169.254.169.254 that
//! serves its instance profile's credentials ([`imds`], [`profile`]). Public addresses are loopback ones ([`loopback`]): the twin
//! writes them into every response in place of moto's inventions, and QEMU forwards the
//! instance's ports from them. Requests and responses are EC2's query protocol ([`query`],
//! [`xml`]).
pub mod actions;
pub mod ami;
pub mod fleet;
pub mod imds;
pub mod loopback;
pub mod machine;
pub mod profile;
pub mod proxy;
pub mod query;
pub mod security;
pub mod volume;
pub mod xml;
