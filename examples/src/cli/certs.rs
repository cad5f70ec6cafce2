//! `hodei certs …` and `hodei token …`: a small PKI for mTLS between the
//! control plane and its workers (rcgen, no OpenSSL), and API tokens.
//!
//! ```text
//! hodei certs ca --out pki                                  # pki/ca.crt, pki/ca.key (5 years)
//! hodei certs server --ca pki --san localhost --san 127.0.0.1 --out pki   # server.crt/.key (1 year)
//! hodei certs worker --ca pki --name worker-1 --out pki     # worker-1.crt/.key (90 days)
//! hodei token create --scope submit --name ci               # token + server config line
//! ```

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};

use super::CliError;

/// `hodei certs …`.
#[derive(Debug, Subcommand)]
pub(crate) enum CertsCommand {
    /// Create a certificate authority: DIR/ca.crt and DIR/ca.key.
    Ca {
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 1825)]
        days: u32,
        /// Common name of the CA.
        #[arg(long, default_value = "Hodei CA")]
        name: String,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Create the control plane's server certificate: DIR/server.crt and DIR/server.key.
    Server {
        /// Directory holding ca.crt and ca.key.
        #[arg(long)]
        ca: PathBuf,
        /// DNS name or IP address the server is reached at (repeatable).
        #[arg(long = "san", required = true)]
        sans: Vec<String>,
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// File name stem (NAME.crt, NAME.key).
        #[arg(long, default_value = "server")]
        name: String,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Create a worker (client) certificate: DIR/NAME.crt and DIR/NAME.key.
    Worker {
        /// Directory holding ca.crt and ca.key.
        #[arg(long)]
        ca: PathBuf,
        /// Worker name: the certificate's common name and the file name stem.
        #[arg(long)]
        name: String,
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 90)]
        days: u32,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

/// `hodei token …`.
#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Print a new random API token and the line that configures it on the server.
    Create {
        /// submit (jobs, logs, listings) or admin (everything).
        #[arg(long, default_value = "submit")]
        scope: String,
        /// Name of the token (shows in the server's logs).
        #[arg(long, default_value = "client")]
        name: String,
    },
    /// Print the server configuration line for an existing token (read from stdin).
    Hash {
        /// submit or admin.
        #[arg(long, default_value = "submit")]
        scope: String,
        /// Name of the token.
        #[arg(long, default_value = "client")]
        name: String,
    },
}

/// Runs `hodei certs …`.
pub(crate) fn run_certs(cmd: CertsCommand) -> Result<u8, CliError> {
    match cmd {
        CertsCommand::Ca {
            out,
            days,
            name,
            force,
        } => {
            let (crt, key) = (out.join("ca.crt"), out.join("ca.key"));
            refuse_overwrite(&[&crt, &key], force)?;
            let key_pair = KeyPair::generate().map_err(gen_err)?;
            let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
            params.distinguished_name.push(DnType::CommonName, name);
            params
                .distinguished_name
                .push(DnType::OrganizationName, "Hodei");
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let serial = set_validity_and_serial(&mut params, days);
            let cert = params.self_signed(&key_pair).map_err(gen_err)?;
            write_pair(&out, &crt, &cert.pem(), &key, &key_pair.serialize_pem())?;
            report("CA", &crt, &key, &serial, days);
            Ok(0)
        }
        CertsCommand::Server {
            ca,
            sans,
            out,
            days,
            name,
            force,
        } => {
            let (crt, key) = (
                out.join(format!("{name}.crt")),
                out.join(format!("{name}.key")),
            );
            refuse_overwrite(&[&crt, &key], force)?;
            let (issuer_pem, issuer_key) = read_ca(&ca)?;
            let issuer = Issuer::from_ca_cert_pem(&issuer_pem, issuer_key).map_err(|e| {
                CliError::Usage(format!(
                    "{}: not a usable CA certificate: {e}",
                    ca.display()
                ))
            })?;
            let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
            for s in &sans {
                params.subject_alt_names.push(san(s)?);
            }
            params
                .distinguished_name
                .push(DnType::CommonName, sans[0].clone());
            params
                .distinguished_name
                .push(DnType::OrganizationName, "Hodei");
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.use_authority_key_identifier_extension = true;
            let serial = set_validity_and_serial(&mut params, days);
            let key_pair = KeyPair::generate().map_err(gen_err)?;
            let cert = params.signed_by(&key_pair, &issuer).map_err(gen_err)?;
            write_pair(&out, &crt, &cert.pem(), &key, &key_pair.serialize_pem())?;
            report("server", &crt, &key, &serial, days);
            println!("SANs:    {}", sans.join(", "));
            Ok(0)
        }
        CertsCommand::Worker {
            ca,
            name,
            out,
            days,
            force,
        } => {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(CliError::Usage(format!(
                    "worker name {name:?}: use letters, digits, '-', '_' and '.'"
                )));
            }
            let (crt, key) = (
                out.join(format!("{name}.crt")),
                out.join(format!("{name}.key")),
            );
            refuse_overwrite(&[&crt, &key], force)?;
            let (issuer_pem, issuer_key) = read_ca(&ca)?;
            let issuer = Issuer::from_ca_cert_pem(&issuer_pem, issuer_key).map_err(|e| {
                CliError::Usage(format!(
                    "{}: not a usable CA certificate: {e}",
                    ca.display()
                ))
            })?;
            let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
            params.distinguished_name.push(DnType::CommonName, name);
            params
                .distinguished_name
                .push(DnType::OrganizationName, "Hodei workers");
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            params.use_authority_key_identifier_extension = true;
            let serial = set_validity_and_serial(&mut params, days);
            let key_pair = KeyPair::generate().map_err(gen_err)?;
            let cert = params.signed_by(&key_pair, &issuer).map_err(gen_err)?;
            write_pair(&out, &crt, &cert.pem(), &key, &key_pair.serialize_pem())?;
            report("worker", &crt, &key, &serial, days);
            Ok(0)
        }
    }
}

/// Runs `hodei token …`.
pub(crate) fn run_token(cmd: TokenCommand) -> Result<u8, CliError> {
    use hodei_core::api::auth::{ApiToken, Scope, generate_token};
    let (scope, name, token) = match cmd {
        TokenCommand::Create { scope, name } => (scope, name, generate_token()),
        TokenCommand::Hash { scope, name } => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| CliError::Io(format!("cannot read the token from stdin: {e}")))?;
            let t = line.trim().to_owned();
            if t.is_empty() {
                return Err(CliError::Usage("no token on stdin".into()));
            }
            (scope, name, t)
        }
    };
    let scope: Scope = scope.parse().map_err(|e| CliError::Usage(format!("{e}")))?;
    if name.is_empty() || name.contains([':', ',', '\n']) {
        return Err(CliError::Usage(
            "token name must be non-empty, without ':' or ','".into(),
        ));
    }
    let line = ApiToken::from_secret(name, scope, &token).config_line();
    println!("token:       {token}");
    println!("server line: {line}");
    eprintln!(
        "Give the token to the client (HODEI_TOKEN={token}); add the server line to \
         HODEI_API_TOKENS (comma-separated) or to the file named by HODEI_API_TOKENS_FILE. \
         The token is not stored anywhere: keep it now."
    );
    Ok(0)
}

fn gen_err(e: rcgen::Error) -> CliError {
    CliError::Io(format!("certificate generation failed: {e}"))
}

fn san(s: &str) -> Result<SanType, CliError> {
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let name = s
        .to_owned()
        .try_into()
        .map_err(|e| CliError::Usage(format!("--san {s:?}: {e}")))?;
    Ok(SanType::DnsName(name))
}

/// A random positive 128-bit serial; validity from one hour ago (clock skew) for `days`.
fn set_validity_and_serial(params: &mut CertificateParams, days: u32) -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    params.serial_number = Some(SerialNumber::from_slice(&bytes));
    let now = std::time::SystemTime::now();
    params.not_before = (now - std::time::Duration::from_secs(3600)).into();
    params.not_after = (now + std::time::Duration::from_secs(u64::from(days) * 86_400)).into();
    hex_serial(&bytes)
}

fn hex_serial(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_ca(dir: &Path) -> Result<(String, KeyPair), CliError> {
    let read = |f: &str| {
        let p = dir.join(f);
        fs::read_to_string(&p).map_err(|e| {
            CliError::Usage(format!(
                "cannot read {}: {e} (create a CA first: hodei certs ca --out {})",
                p.display(),
                dir.display()
            ))
        })
    };
    let crt = read("ca.crt")?;
    let key = read("ca.key")?;
    let key = KeyPair::from_pem(&key)
        .map_err(|e| CliError::Usage(format!("{}/ca.key: {e}", dir.display())))?;
    Ok((crt, key))
}

fn refuse_overwrite(paths: &[&Path], force: bool) -> Result<(), CliError> {
    if force {
        return Ok(());
    }
    for p in paths {
        if p.exists() {
            return Err(CliError::Usage(format!(
                "{} exists; pass --force to replace it",
                p.display()
            )));
        }
    }
    Ok(())
}

fn write_pair(
    dir: &Path,
    crt: &Path,
    crt_pem: &str,
    key: &Path,
    key_pem: &str,
) -> Result<(), CliError> {
    let io =
        |p: &Path, e: std::io::Error| CliError::Io(format!("cannot write {}: {e}", p.display()));
    fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    // Write to temporary names then rename, so a server polling the files
    // never reads a half-written pair.
    let tmp_key = key.with_extension("key.tmp");
    let tmp_crt = crt.with_extension("crt.tmp");
    {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp_key).map_err(|e| io(&tmp_key, e))?;
        f.write_all(key_pem.as_bytes())
            .map_err(|e| io(&tmp_key, e))?;
    }
    fs::write(&tmp_crt, crt_pem).map_err(|e| io(&tmp_crt, e))?;
    fs::rename(&tmp_key, key).map_err(|e| io(key, e))?;
    fs::rename(&tmp_crt, crt).map_err(|e| io(crt, e))?;
    Ok(())
}

fn report(what: &str, crt: &Path, key: &Path, serial: &str, days: u32) {
    println!("created {what} certificate");
    println!("cert:    {}", crt.display());
    println!("key:     {} (mode 0600: keep it secret)", key.display());
    println!("serial:  {serial}");
    println!("valid:   {days} days");
}
