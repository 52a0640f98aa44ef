//! TLS for database connections, with rustls, following libpq's `sslmode`.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_name, WebPkiServerVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};
use crate::net::connect::Database;
use crate::net::libpq::SslMode;

/// The tokio-postgres TLS mode and the rustls connector for a libpq `sslmode`.
pub(crate) fn connector(
    mode: SslMode,
    rootcert: Option<&Path>,
    which: Database,
) -> Result<(tokio_postgres::config::SslMode, MakeRustlsConnect)> {
    use tokio_postgres::config::SslMode as Wire;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // libpq checks the certificate under `require` too when a CA file is given.
    let rootcert = match mode {
        SslMode::Require => rootcert.filter(|p| p.exists()),
        SslMode::VerifyCa | SslMode::VerifyFull => rootcert,
        _ => None,
    };
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, rootcert) {
        (SslMode::VerifyFull, Some(path)) => Arc::new(CaVerifier::new(path, &provider, which, true)?),
        (SslMode::VerifyCa | SslMode::Require, Some(path)) => Arc::new(CaVerifier::new(path, &provider, which, false)?),
        (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
            return Err(Error::Tls {
                which,
                problem: "sslmode verify-ca and verify-full need sslrootcert (a CA certificate file)".into(),
                source: None,
            })
        }
        _ => Arc::new(EncryptOnly {
            provider: provider.clone(),
        }),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls {
            which,
            problem: "cannot set up TLS".into(),
            source: Some(Box::new(e)),
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let wire = match mode {
        SslMode::Disable => Wire::Disable,
        SslMode::Allow | SslMode::Prefer => Wire::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Wire::Require,
    };
    Ok((wire, MakeRustlsConnect::new(config)))
}

fn read_roots(path: &Path, which: Database) -> Result<Vec<CertificateDer<'static>>> {
    let bad = |problem: String, source: Option<Box<dyn std::error::Error + Send + Sync>>| Error::Tls {
        which,
        problem,
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(format!("cannot read sslrootcert {}", path.display()), Some(Box::new(e))))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("sslrootcert {} is not PEM", path.display()), Some(Box::new(e))))?;
    if certs.is_empty() {
        return Err(bad(
            format!("sslrootcert {} holds no certificate", path.display()),
            None,
        ));
    }
    Ok(certs)
}

/// Checks the server's certificate against `sslrootcert`: the chain must
/// lead to one of its certificates, or the server's certificate must be one
/// of them (a self-signed server certificate handed out as its own CA, which
/// libpq accepts too). With `check_name` (`verify-full`) it must also name
/// the host connected to.
#[derive(Debug)]
struct CaVerifier {
    chain: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
    check_name: bool,
}

impl CaVerifier {
    fn new(path: &Path, provider: &Arc<CryptoProvider>, which: Database, check_name: bool) -> Result<CaVerifier> {
        let pinned = read_roots(path, which)?;
        let mut roots = RootCertStore::empty();
        let (_added, _ignored) = roots.add_parsable_certificates(pinned.iter().cloned());
        let chain = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| Error::Tls {
                which,
                problem: format!("sslrootcert {} holds no usable CA certificate", path.display()),
                source: Some(Box::new(e)),
            })?;
        Ok(CaVerifier {
            chain,
            pinned,
            check_name,
        })
    }
}

impl ServerCertVerifier for CaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        if self.pinned.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            if self.check_name {
                verify_server_name(&ParsedCertificate::try_from(end_entity)?, server_name)?;
            }
            return Ok(ServerCertVerified::assertion());
        }
        match self
            .chain
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// `prefer` and `require` without a CA: encrypted, the certificate not
/// checked (libpq's behaviour). The handshake signatures are still verified.
#[derive(Debug)]
struct EncryptOnly {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
