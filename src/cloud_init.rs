//! cloud-init user-data for every provider, rendered from `cloud-init/user-data.yaml`, and the
//! local provider's NoCloud network-config (`cloud-init/network-config.yaml`).
//! They carry no secrets: user-data is readable from the seed ISO and the metadata service.

use minijinja::{Environment, context};

const USER_DATA: &str = include_str!("../cloud-init/user-data.yaml");
const NETWORK_CONFIG: &str = include_str!("../cloud-init/network-config.yaml");

/// What the template needs about a node.
pub struct NodeIdentity<'a> {
    pub hostname: &'a str,
    pub run_id: &'a str,
    pub instance: &'a str,
    pub node: &'a str,
    pub role: &'a str,
    pub private_ip: &'a str,
    pub ssh_public_key: &'a str,
    /// Keep the image's own default user (cloud-init's `default` entry) beside dbctl's.
    pub keep_default_user: bool,
}

/// Renders user-data.
pub fn user_data(n: &NodeIdentity<'_>) -> Result<String, minijinja::Error> {
    render(
        USER_DATA,
        context! {
            hostname => n.hostname, run_id => n.run_id, instance => n.instance, node => n.node,
            role => n.role, private_ip => n.private_ip, ssh_public_key => n.ssh_public_key,
            keep_default_user => n.keep_default_user,
        },
    )
}

/// Renders the local VMs' network-config: static addresses on the NICs with these MACs.
///
/// `metadata`: the EC2 twin's metadata link, (MAC, the guest's address on it), where the
/// instance metadata service answers (`twin::imds`); the local provider has none.
pub fn network_config(
    mgmt_mac: &str,
    vpc_mac: &str,
    private_ip: &str,
    metadata: Option<(&str, &str)>,
) -> Result<String, minijinja::Error> {
    let (metadata_mac, metadata_guest) = metadata.unzip();
    render(
        NETWORK_CONFIG,
        context! {
            mgmt_mac => mgmt_mac,
            vpc_mac => vpc_mac,
            private_ip => private_ip,
            metadata_mac => metadata_mac,
            metadata_guest => metadata_guest,
        },
    )
}

/// Strict undefined, so a missing variable is an error, not an empty string.
fn render(template: &str, ctx: minijinja::Value) -> Result<String, minijinja::Error> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.render_str(template, ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(private_ip: &str, keep_default_user: bool) -> String {
        user_data(&NodeIdentity {
            hostname: "db-primary",
            run_id: "run-1",
            instance: "db",
            node: "primary",
            role: "primary",
            private_ip,
            ssh_public_key: "ssh-ed25519 AAAAC3Nza dbctl",
            keep_default_user,
        })
        .unwrap()
    }

    #[test]
    fn user_data_is_cloud_config_with_the_key_and_no_secrets() {
        let ud = rendered("10.77.0.10", false);
        assert!(ud.starts_with("#cloud-config\n"));
        assert!(ud.contains("\nusers:\n  - name: dbctl\n"), "{ud}");
        assert!(ud.contains("      - ssh-ed25519 AAAAC3Nza dbctl\n"));
        assert!(ud.contains("DBCTL_PRIVATE_IP=10.77.0.10"));
        assert!(!ud.to_lowercase().contains("private_key") && !ud.contains("PRIVATE KEY"));
    }

    #[test]
    fn cloud_images_keep_their_default_user_beside_dbctl() {
        let ud = rendered("dhcp", true);
        // Without `default`, cloud-init creates only dbctl's user and the AMI's `admin` is gone.
        assert!(
            ud.contains("\nusers:\n  - default\n  - name: dbctl\n"),
            "{ud}"
        );
    }

    #[test]
    fn network_config_matches_both_nics_by_mac() {
        let text =
            network_config("52:54:00:00:00:01", "52:54:00:77:00:01", "10.77.0.11", None).unwrap();
        // No YAML parser in the tree: check the exact lines cloud-init reads.
        for line in [
            "version: 2",
            "  mgmt:\n    match:\n      macaddress: \"52:54:00:00:00:01\"\n    addresses: [10.0.2.15/24]",
            "  vpc:\n    match:\n      macaddress: \"52:54:00:77:00:01\"\n    addresses: [10.77.0.11/24]",
            "      - to: 0.0.0.0/0\n        via: 10.0.2.2",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        assert!(!text.contains("metadata"), "{text}");
        // The twin's metadata link: a third NIC, its address only (no route: the link's own
        // /24 holds 169.254.169.254).
        let twin = network_config(
            "52:54:00:00:00:01",
            "52:54:00:77:00:01",
            "10.77.0.11",
            Some(("52:54:00:a9:fe:01", "169.254.169.15")),
        )
        .unwrap();
        let metadata = "  metadata:\n    match:\n      macaddress: \"52:54:00:a9:fe:01\"\n    addresses: [169.254.169.15/24]\n";
        assert!(twin.trim_end().ends_with(metadata.trim_end()), "{twin}");
    }
}
