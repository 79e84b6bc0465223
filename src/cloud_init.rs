//! cloud-init user-data for every provider, rendered from `cloud-init/user-data.yaml`.
//! It carries no secrets: user-data is readable from the seed ISO and the metadata service.

use minijinja::{Environment, context};

const USER_DATA: &str = include_str!("../cloud-init/user-data.yaml");

/// What the template needs about a node.
pub struct NodeIdentity<'a> {
    pub hostname: &'a str,
    pub run_id: &'a str,
    pub instance: &'a str,
    pub node: &'a str,
    pub role: &'a str,
    pub private_ip: &'a str,
    pub ssh_public_key: &'a str,
}

/// Renders user-data; strict undefined so a missing variable is an error, not an empty string.
pub fn user_data(n: &NodeIdentity<'_>) -> Result<String, minijinja::Error> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_template("user-data", USER_DATA)?;
    env.get_template("user-data")?.render(context! {
        hostname => n.hostname, run_id => n.run_id, instance => n.instance, node => n.node,
        role => n.role, private_ip => n.private_ip, ssh_public_key => n.ssh_public_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_is_cloud_config_with_the_key_and_no_secrets() {
        let ud = user_data(&NodeIdentity {
            hostname: "db-primary",
            run_id: "run-1",
            instance: "db",
            node: "primary",
            role: "primary",
            private_ip: "10.77.0.10",
            ssh_public_key: "ssh-ed25519 AAAAC3Nza dbctl",
        })
        .unwrap();
        assert!(ud.starts_with("#cloud-config\n"));
        assert!(ud.contains("      - ssh-ed25519 AAAAC3Nza dbctl\n"));
        assert!(ud.contains("DBCTL_PRIVATE_IP=10.77.0.10"));
        assert!(!ud.to_lowercase().contains("private_key") && !ud.contains("PRIVATE KEY"));
    }
}
