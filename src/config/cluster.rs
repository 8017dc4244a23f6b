//! The replicas section: how other replicas reach this one, and the secret they share. Read
//! from the file's `cluster:` section.

use super::ConfigError;
use super::settings::settings;

/// Shorter secrets could be guessed from receipts signed with them.
const MIN_SECRET_BYTES: usize = 32;

settings! {
    /// Several replicas behind one Service.
    #[command(next_help_heading = "Replicas")]
    pub struct ClusterArgs;

    /// Several replicas behind one Service, resolved.
    pub struct ClusterConfig {
        /// This replica's own address for the other replicas (e.g. http://10.0.0.7:8080), set on
        /// every replica: receipts and consumer sets name it, and a request for them that
        /// reaches another replica is forwarded here. Unset: one gateway alone.
        #[arg(long, env = "CARROT_ADVERTISE_URL", value_name = "URL")]
        pub advertise_url: String,

        /// The secret every replica shares (at least 32 bytes): signs receipts and consumer set
        /// ids, and the requests replicas forward to each other. Prefer the variable.
        #[arg(long, env = "CARROT_PEER_SECRET", hide_env_values = true, value_name = "SECRET")]
        pub peer_secret: String,
    }
}

impl ClusterConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (&self.advertise_url, &self.peer_secret) {
            (None, None) => Ok(()),
            (Some(_), None) | (None, Some(_)) => Err(ConfigError::Invalid {
                key: "advertise_url",
                message:
                    "replicas need both advertise_url (--advertise-url, CARROT_ADVERTISE_URL) \
                          and peer_secret (--peer-secret, CARROT_PEER_SECRET); set both or neither"
                        .into(),
            }),
            (Some(url), Some(secret)) => {
                let parsed = reqwest::Url::parse(url).map_err(|error| ConfigError::Invalid {
                    key: "advertise_url",
                    message: format!("{url:?} is not a URL ({error}); e.g. http://10.0.0.7:8080"),
                })?;
                if !matches!(parsed.scheme(), "http" | "https")
                    || parsed.host().is_none()
                    || parsed.path() != "/"
                    || parsed.query().is_some()
                {
                    return Err(ConfigError::Invalid {
                        key: "advertise_url",
                        message: format!(
                            "{url:?} must be http:// or https://, a host and an optional port, \
                             with no path, e.g. http://10.0.0.7:8080"
                        ),
                    });
                }
                if secret.len() < MIN_SECRET_BYTES {
                    return Err(ConfigError::Invalid {
                        key: "peer_secret",
                        message: format!(
                            "is {} bytes; use at least {MIN_SECRET_BYTES}, e.g. the output of \
                             `openssl rand -hex 32`",
                            secret.len()
                        ),
                    });
                }
                Ok(())
            }
        }
    }

    /// The advertised address without a trailing slash, as receipts carry it.
    pub fn advertised(&self) -> Option<(String, &str)> {
        let url = self.advertise_url.as_deref()?;
        let secret = self.peer_secret.as_deref()?;
        Some((url.trim_end_matches('/').to_owned(), secret))
    }
}
