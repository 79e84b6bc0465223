//! dbctl's local certificate authority and per-instance server certificates, so clients can
//! connect with `sslmode=verify-full`. The CA lives in `<state>/ca/` (key 0600).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("local CA {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
}

pub struct LocalCa {
    key: KeyPair,
    cert_pem: String,
    pub cert_path: PathBuf,
}

/// The CA's fixed identity: rebuilt the same way to sign, so issued certificates chain to it.
fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "dbctl local CA");
    dn.push(DnType::OrganizationName, "dbctl");
    p.distinguished_name = dn;
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

impl LocalCa {
    /// Loads `dir/ca.{key,crt}`, creating the CA on first use.
    pub fn load_or_create(dir: &Path) -> Result<LocalCa, TlsError> {
        let io = |e| TlsError::Io(dir.to_path_buf(), e);
        let (key_path, cert_path) = (dir.join("ca.key"), dir.join("ca.crt"));
        if !cert_path.exists() {
            crate::private_file::ensure_dir(dir).map_err(io)?;
            let key = KeyPair::generate()?;
            let cert = ca_params()?.self_signed(&key)?;
            crate::private_file::write(&key_path, key.serialize_pem().as_bytes()).map_err(io)?;
            // The certificate last: its presence means the CA is complete.
            std::fs::write(&cert_path, cert.pem()).map_err(io)?;
        }
        let key = KeyPair::from_pem(&std::fs::read_to_string(&key_path).map_err(io)?)?;
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io)?;
        Ok(LocalCa {
            key,
            cert_pem,
            cert_path,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A node certificate for `names` (DNS names or IP addresses); returns (cert, key) PEM.
    /// It serves (PostgreSQL, etcd, Patroni's API) and is also the node's client certificate
    /// towards its peers (etcd peers, Patroni members, etcd clients), hence both usages.
    pub fn issue_server(&self, names: &[String]) -> Result<(String, String), TlsError> {
        let mut p = CertificateParams::new(names.to_vec())?;
        p.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate()?;
        let issuer = Issuer::new(ca_params()?, &self.key);
        let cert = p.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}
