//! The TLS sections: the listener's certificate (`tls:` in the file) and the files for
//! `amqps://` (`amqp_tls:`), each flag over its file key, read and checked at start.

use std::path::PathBuf;

use super::ConfigError;
use super::settings::settings;
use crate::net::tls::{BrokerTls, ListenerTls, TlsFileError};

settings! {
    /// The HTTPS listener's PEM files.
    #[command(next_help_heading = "Server")]
    pub struct ListenerTlsArgs;

    /// The HTTPS listener's PEM files, as given.
    pub struct ListenerTlsFiles {
        /// PEM certificate (chain) of the listener; with --tls-key the gateway serves HTTPS only.
        #[arg(long = "tls-cert", env = "CARROT_TLS_CERT", value_name = "FILE")]
        pub cert: PathBuf,

        /// PEM private key of --tls-cert (unencrypted PKCS#8, PKCS#1 or SEC1).
        #[arg(long = "tls-key", env = "CARROT_TLS_KEY", value_name = "FILE")]
        pub key: PathBuf,
    }
}

settings! {
    /// PEM files for `amqps://`.
    #[command(next_help_heading = "Broker")]
    pub struct AmqpTlsArgs;

    /// PEM files for `amqps://`, as given.
    pub struct AmqpTlsFiles {
        /// PEM file of CA certificates that amqps:// trusts on top of the system's roots.
        #[arg(long = "amqp-ca-file", env = "CARROT_AMQP_CA_FILE", value_name = "FILE")]
        pub ca_file: PathBuf,

        /// PEM certificate (chain) presented to the broker over amqps://; needs --amqp-client-key.
        #[arg(long = "amqp-client-cert", env = "CARROT_AMQP_CLIENT_CERT", value_name = "FILE")]
        pub client_cert: PathBuf,

        /// PEM private key of --amqp-client-cert (unencrypted PKCS#8, PKCS#1 or SEC1).
        #[arg(long = "amqp-client-key", env = "CARROT_AMQP_CLIENT_KEY", value_name = "FILE")]
        pub client_key: PathBuf,
    }
}

impl AmqpTlsFiles {
    /// The CA bundle and client identity for `amqps://`, read and checked.
    pub(super) fn read(self) -> Result<BrokerTls, ConfigError> {
        let client = pair(
            self.client_cert,
            self.client_key,
            "amqp_tls",
            "--amqp-client-cert / CARROT_AMQP_CLIENT_CERT / amqp_tls.client_cert",
            "--amqp-client-key / CARROT_AMQP_CLIENT_KEY / amqp_tls.client_key",
        )?;
        BrokerTls::from_files(
            self.ca_file.as_deref(),
            client
                .as_ref()
                .map(|(cert, key)| (cert.as_path(), key.as_path())),
        )
        .map_err(|error| invalid("amqp_tls", error))
    }
}

impl ListenerTlsFiles {
    /// The listener's certificate and key, or `None` for plain HTTP.
    pub(super) fn read(self) -> Result<Option<ListenerTls>, ConfigError> {
        let identity = pair(
            self.cert,
            self.key,
            "tls",
            "--tls-cert / CARROT_TLS_CERT / tls.cert",
            "--tls-key / CARROT_TLS_KEY / tls.key",
        )?;
        identity
            .map(|(cert, key)| ListenerTls::from_files(&cert, &key))
            .transpose()
            .map_err(|error| invalid("tls", error))
    }
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
        assert!(config.broker.tls.ca_pem.is_some() && config.broker.tls.client.is_some());
        assert!(config.server.tls.is_some());
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
