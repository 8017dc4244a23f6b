//! Which TLS files to use, flag by flag over the file's keys, and reading them at start.

use std::path::PathBuf;

use super::file::{AmqpTlsConfig, ListenerTlsConfig};
use super::{Cli, ConfigError};
use crate::net::tls::{BrokerTls, ListenerTls, TlsFileError};

/// The CA bundle and client identity for `amqps://`, read and checked.
pub(super) fn broker_tls(
    cli: &Cli,
    file: Option<&AmqpTlsConfig>,
) -> Result<BrokerTls, ConfigError> {
    let none = AmqpTlsConfig::default();
    let file = file.unwrap_or(&none);
    let ca_file = pick(&cli.amqp_ca_file, &file.ca_file);
    let cert = pick(&cli.amqp_client_cert, &file.client_cert);
    let key = pick(&cli.amqp_client_key, &file.client_key);
    let client = pair(
        cert,
        key,
        "amqp_tls",
        "--amqp-client-cert / CARROT_AMQP_CLIENT_CERT / amqp_tls.client_cert",
        "--amqp-client-key / CARROT_AMQP_CLIENT_KEY / amqp_tls.client_key",
    )?;
    BrokerTls::from_files(
        ca_file.as_deref(),
        client
            .as_ref()
            .map(|(cert, key)| (cert.as_path(), key.as_path())),
    )
    .map_err(|error| invalid("amqp_tls", error))
}

/// The listener's certificate and key, or `None` for plain HTTP.
pub(super) fn listener_tls(
    cli: &Cli,
    file: Option<&ListenerTlsConfig>,
) -> Result<Option<ListenerTls>, ConfigError> {
    let none = ListenerTlsConfig::default();
    let file = file.unwrap_or(&none);
    let identity = pair(
        pick(&cli.tls_cert, &file.cert),
        pick(&cli.tls_key, &file.key),
        "tls",
        "--tls-cert / CARROT_TLS_CERT / tls.cert",
        "--tls-key / CARROT_TLS_KEY / tls.key",
    )?;
    identity
        .map(|(cert, key)| ListenerTls::from_files(&cert, &key))
        .transpose()
        .map_err(|error| invalid("tls", error))
}

fn pick(flag: &Option<PathBuf>, file: &Option<PathBuf>) -> Option<PathBuf> {
    flag.clone().or_else(|| file.clone())
}

/// A certificate goes with its key: both or neither.
fn pair(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    section: &'static str,
    cert_names: &str,
    key_names: &str,
) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some((cert, key))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::Invalid {
            key: section,
            message: format!("a certificate is set ({cert_names}) but no key: set {key_names}"),
        }),
        (None, Some(_)) => Err(ConfigError::Invalid {
            key: section,
            message: format!("a key is set ({key_names}) but no certificate: set {cert_names}"),
        }),
    }
}

fn invalid(key: &'static str, error: TlsFileError) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::{Cli, Config};

    /// A directory of PEM files, removed on drop.
    struct Files(std::path::PathBuf);

    impl Files {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!(
                "carrot-config-tls-{}",
                uuid::Uuid::new_v4().simple()
            ));
            std::fs::create_dir(&dir).expect("temp dir is writable");
            let key = rcgen::KeyPair::generate().expect("key");
            let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
                .expect("params")
                .self_signed(&key)
                .expect("certificate");
            for (name, text) in [
                ("cert.pem", cert.pem()),
                ("key.pem", key.serialize_pem()),
                (
                    "config.yaml",
                    format!(
                        "amqp_url: amqps://guest:guest@localhost:5671/%2f\n\
                         amqp_tls: {{ca_file: {0}/cert.pem, client_cert: {0}/cert.pem, \
                         client_key: {0}/key.pem}}\n\
                         tls: {{cert: {0}/cert.pem, key: {0}/key.pem}}\n",
                        dir.display()
                    ),
                ),
            ] {
                std::fs::write(dir.join(name), text).expect("temp dir is writable");
            }
            Self(dir)
        }

        fn path(&self, name: &str) -> String {
            self.0.join(name).display().to_string()
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn load(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::parse_from(std::iter::once("carrot-gateway").chain(args.iter().copied()));
        Config::load(&cli).map_err(|error| error.to_string())
    }

    #[test]
    fn the_file_keys_name_every_tls_file() {
        let files = Files::new();
        let config = load(&["--config", &files.path("config.yaml")]).expect("valid");
        assert!(config.amqp_tls.ca_pem.is_some() && config.amqp_tls.client.is_some());
        assert!(config.tls.is_some());
    }

    #[test]
    fn a_flag_wins_over_the_file_key() {
        let files = Files::new();
        let missing = files.path("missing.pem");
        let error = load(&[
            "--config",
            &files.path("config.yaml"),
            "--tls-key",
            &missing,
        ])
        .expect_err("the flag's file is read, not the file's");
        assert!(
            error.starts_with("tls: ") && error.contains("missing.pem"),
            "{error}"
        );
    }

    #[test]
    fn a_certificate_needs_its_key() {
        let files = Files::new();
        let error = load(&["--tls-cert", &files.path("cert.pem")]).expect_err("refused");
        assert!(error.contains("--tls-key"), "{error}");
        let error = load(&[
            "--amqp-url",
            "amqps://localhost/%2f",
            "--amqp-client-key",
            &files.path("key.pem"),
        ])
        .expect_err("refused");
        assert!(error.contains("--amqp-client-cert"), "{error}");
    }

    #[test]
    fn broker_tls_files_need_an_amqps_url() {
        let files = Files::new();
        let error = load(&["--amqp-ca-file", &files.path("cert.pem")]).expect_err("refused");
        assert!(error.contains("amqps://"), "{error}");
        load(&[
            "--amqp-url",
            "amqps://localhost/%2f",
            "--amqp-ca-file",
            &files.path("cert.pem"),
        ])
        .expect("valid with amqps://");
    }
}
