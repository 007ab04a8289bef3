//! `roundtrip proxy --mitm`: TLS from the app is terminated by the proxy, so the
//! requests inside an app's `CONNECT` are seen (`app_request` with their `https://`
//! URL) and go through the pool like plain ones — upstream TLS is verified as usual.
//!
//! The certificates the app is shown are made per host by a local CA, kept in one
//! PEM file (certificate, then key): made with rcgen when the file is missing,
//! loaded otherwise. Only apps told to trust that CA (`--cacert`, `SSL_CERT_FILE`,
//! …) accept them; an app that does not trust it fails its handshake, and only
//! that connection ends. Nothing is installed system-wide.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The CA's name, as apps' error messages will show it.
const CA_NAME: &str = "Roundtrip proxy MITM CA (local, made by roundtrip proxy --mitm)";

/// Host certificates kept; when full they are all dropped and made again as asked.
const MAX_HOSTS: usize = 1_000;

/// A local CA and the TLS configurations it signed, per host.
pub struct Mitm {
    path: PathBuf,
    ca_pem: String,
    ca: Certificate,
    ca_key: KeyPair,
    hosts: Mutex<HashMap<String, Arc<ServerConfig>>>,
}

impl Mitm {
    /// Loads the CA from `path` (its certificate and key, PEM), or makes one and
    /// writes it there (mode 0600) when the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, String> {
        let (ca_pem, ca_key) = match std::fs::read(path) {
            Ok(pem) => {
                CertificateDer::from_pem_slice(&pem)
                    .map_err(|e| format!("{}: no CA certificate in it ({e})", path.display()))?;
                let key = PrivateKeyDer::from_pem_slice(&pem)
                    .map_err(|e| format!("{}: no private key in it ({e})", path.display()))?;
                let key = KeyPair::try_from(&key)
                    .map_err(|e| format!("{}: the key cannot sign: {e}", path.display()))?;
                let text = String::from_utf8_lossy(&pem);
                let cert_pem = cert_section(&text).unwrap_or_default();
                (cert_pem, key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path)?,
            Err(e) => return Err(format!("cannot read the MITM CA {}: {e}", path.display())),
        };
        let der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        // The issuer as rcgen needs it: the same name and key as the file's certificate.
        let ca = CertificateParams::from_ca_cert_der(&der)
            .map_err(|e| format!("{}: not a CA certificate: {e}", path.display()))?
            .self_signed(&ca_key)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            ca_pem,
            ca,
            ca_key,
            hosts: Mutex::default(),
        })
    }

    /// [`Mitm::load_or_create`] at `path`, or at [`Mitm::default_path`] when `None`.
    pub fn open(path: Option<&Path>) -> Result<Self, String> {
        match path.map(Path::to_owned).or_else(Self::default_path) {
            Some(path) => Self::load_or_create(&path),
            None => Err("no home directory for the MITM CA; name a file with --mitm-ca".to_owned()),
        }
    }

    /// The CA certificate, PEM: what apps must trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The TLS configuration shown to an app asking for `host`: a certificate for it
    /// signed by the CA (made once per host), HTTP/1.1 only.
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, String> {
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(config) = hosts.get(host) {
            return Ok(Arc::clone(config));
        }
        let failed = |e: rcgen::Error| format!("cannot make a certificate for {host}: {e}");
        let key = KeyPair::generate().map_err(failed)?;
        let mut params = CertificateParams::new(vec![host.to_owned()]).map_err(failed)?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, host);
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .map_err(failed)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .map_err(|e| format!("cannot use the certificate for {host}: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        if hosts.len() >= MAX_HOSTS {
            hosts.clear();
        }
        hosts.insert(host.to_owned(), Arc::clone(&config));
        Ok(config)
    }

    /// A CA bundle for apps: the system's roots (from `bundle` when it can be read)
    /// followed by this CA.
    pub fn bundle_with(&self, system: Option<&Path>) -> String {
        let roots = system
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        let sep = if roots.is_empty() || roots.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        format!("{roots}{sep}{}", self.ca_pem)
    }

    /// Where the CA lives unless told: `~/.local/share/roundtrip/mitm-ca.pem`.
    pub fn default_path() -> Option<PathBuf> {
        directories_next::ProjectDirs::from("", "", "roundtrip")
            .map(|dirs| dirs.data_dir().join("mitm-ca.pem"))
    }
}

/// Makes a CA and writes its certificate and key to `path`, readable by its owner only.
fn create(path: &Path) -> Result<(String, KeyPair), String> {
    let failed = |e: rcgen::Error| format!("cannot make the MITM CA: {e}");
    let key = KeyPair::generate().map_err(failed)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    let cert = params.self_signed(&key).map_err(failed)?;
    let pem = cert.pem();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    write_private(path, &format!("{pem}{}", key.serialize_pem()))
        .map_err(|e| format!("cannot write the MITM CA to {}: {e}", path.display()))?;
    Ok((pem, key))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

/// The first certificate's PEM section of `text`.
fn cert_section(text: &str) -> Option<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = text.find(BEGIN)?;
    let end = start + text[start..].find(END)? + END.len();
    Some(format!("{}\n", &text[start..end]))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_missing_ca_is_made_and_written_then_loaded_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/ca.pem");
        let made = Mitm::load_or_create(&path).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let loaded = Mitm::load_or_create(&path).unwrap();
        assert_eq!(made.ca_pem(), loaded.ca_pem());
        assert!(loaded.server_config("example.com").is_ok());
        // The same host's configuration is made once.
        let again = loaded.server_config("example.com").unwrap();
        assert!(Arc::ptr_eq(
            &again,
            &loaded.server_config("example.com").unwrap()
        ));
    }

    #[test]
    fn a_file_that_is_not_a_ca_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not pem").unwrap();
        let error = Mitm::load_or_create(&path).err().unwrap();
        assert!(
            error.contains("ca.pem") && error.contains("no CA certificate"),
            "{error}"
        );
    }
}
