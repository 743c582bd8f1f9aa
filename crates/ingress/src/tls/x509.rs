//! What the proxy reads from a certificate: its DNS names and validity.

use std::time::SystemTime;

use x509_cert::der::oid::AssociatedOid;
use x509_cert::der::Decode;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;

/// The leaf's subjectAltName DNS names, not-before and not-after.
pub(crate) fn read(der: &[u8]) -> Result<(Vec<String>, SystemTime, SystemTime), String> {
    let cert = x509_cert::Certificate::from_der(der).map_err(|e| e.to_string())?;
    let tbs = &cert.tbs_certificate;
    let mut names = Vec::new();
    for ext in tbs.extensions.iter().flatten() {
        if ext.extn_id == SubjectAltName::OID {
            let san =
                SubjectAltName::from_der(ext.extn_value.as_bytes()).map_err(|e| e.to_string())?;
            for n in san.0 {
                if let GeneralName::DnsName(d) = n {
                    names.push(d.as_str().to_owned());
                }
            }
        }
    }
    Ok((
        names,
        tbs.validity.not_before.to_system_time(),
        tbs.validity.not_after.to_system_time(),
    ))
}
