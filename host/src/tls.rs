//! TLS for the `net` import: one rustls client config per transport (so sessions
//! resume across its connections), and handshake failures named for a user.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{CertificateError, ClientConfig, RootCertStore};

use crate::bindings::roundtrip::transport::types::ErrorCode;
use crate::error::{Error, ErrorKind};

/// Builds the client config: webpki roots plus `extra_ca_files` (PEM) and
/// `extra_ca_certs` (DER), ALPN `http/1.1`.
pub fn client_config(
    extra_ca_files: &[PathBuf],
    extra_ca_certs: &[CertificateDer<'static>],
) -> Result<Arc<ClientConfig>, Error> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for file in extra_ca_files {
        let bad = |why: String| {
            Error::new(
                ErrorKind::Config,
                format!("cannot use CA file {}: {why}", file.display()),
            )
        };
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(file).map_err(|e| bad(e.to_string()))? {
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad("no PEM certificates in it".to_owned()));
        }
    }
    for cert in extra_ca_certs {
        roots.add(cert.clone()).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("cannot trust a CA certificate: {e}"),
            )
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(ErrorKind::Config, format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Names a failed handshake with `server_name` the way Go and curl users know it.
pub fn classify(error: &io::Error, server_name: &str) -> ErrorCode {
    let Some(tls) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return ErrorCode::TlsProtocolError(format!(
            "TLS handshake with {server_name} failed: {error} (is the server speaking TLS on this port?)"
        ));
    };
    match tls {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => ErrorCode::TlsCertificateUnknownIssuer(format!(
                "tls: failed to verify certificate for {server_name}: certificate signed by unknown authority"
            )),
            CertificateError::NotValidForName => ErrorCode::TlsCertificateNameMismatch(format!(
                "tls: failed to verify certificate: certificate is not valid for {server_name}"
            )),
            CertificateError::NotValidForNameContext { presented, .. } => {
                ErrorCode::TlsCertificateNameMismatch(format!(
                    "tls: failed to verify certificate: certificate is valid for {}, not {server_name}",
                    presented.join(", ")
                ))
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                ErrorCode::TlsCertificateExpired(format!(
                    "tls: failed to verify certificate for {server_name}: certificate has expired"
                ))
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                ErrorCode::TlsCertificateExpired(format!(
                    "tls: failed to verify certificate for {server_name}: certificate is not yet valid"
                ))
            }
            other => ErrorCode::TlsCertificateError(format!(
                "tls: failed to verify certificate for {server_name}: {other:?}"
            )),
        },
        rustls::Error::AlertReceived(alert) => ErrorCode::TlsAlertReceived(format!(
            "remote error: tls: {alert:?} (from {server_name})"
        )),
        other => ErrorCode::TlsProtocolError(format!("TLS handshake with {server_name}: {other}")),
    }
}
