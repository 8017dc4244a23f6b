//! The optional config file: which section reads each key, where files have always had it.
//!
//! The server's, the broker's and the consumers' settings are top-level keys side by side with
//! the topology; `tls:`, `amqp_tls:`, `http:`, `auth:` and `cluster:` are sections. A key no part reads is
//! an error naming it, so a typo never passes silently.

use std::path::Path;

use serde::Deserialize;
use serde::de::MapAccess;

use super::ConfigError;
use super::auth::AuthFile;
use super::broker::BrokerArgs;
use super::cluster::ClusterArgs;
use super::consume::ConsumeArgs;
use super::http::HttpArgs;
use super::server::ServerArgs;
use super::settings::{Keys, deserialize_keys};
use super::tls::{AmqpTlsArgs, ListenerTlsArgs};
use super::topology::TopologyFile;

#[derive(Debug, Default)]
pub(super) struct FileConfig {
    pub server: ServerArgs,
    pub tls: ListenerTlsArgs,
    pub broker: BrokerArgs,
    pub amqp_tls: AmqpTlsArgs,
    pub consume: ConsumeArgs,
    pub http: HttpArgs,
    pub auth: AuthFile,
    pub cluster: ClusterArgs,
    pub topology: TopologyFile,
    /// `max_body_bytes` at the top level, as files had it before the `http:` section took it.
    top_level_max_body_bytes: Option<usize>,
}

/// The keys read here: sections, each read whole by its part (which names a key unknown in it),
/// and the older place of `max_body_bytes`.
const OWN_KEYS: [&str; 6] = [
    "tls",
    "amqp_tls",
    "http",
    "auth",
    "cluster",
    "max_body_bytes",
];

impl Keys for FileConfig {
    fn keys() -> Vec<&'static str> {
        [
            ServerArgs::keys(),
            BrokerArgs::keys(),
            ConsumeArgs::keys(),
            OWN_KEYS.to_vec(),
            TopologyFile::keys(),
        ]
        .concat()
    }

    fn read<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        if self.server.read(key, map)?
            || self.broker.read(key, map)?
            || self.consume.read(key, map)?
            || self.topology.read(key, map)?
        {
            return Ok(true);
        }
        // `key: ~` reads as an empty section, as it always has.
        match key {
            "tls" => self.tls = map.next_value::<Option<_>>()?.unwrap_or_default(),
            "amqp_tls" => self.amqp_tls = map.next_value::<Option<_>>()?.unwrap_or_default(),
            "http" => self.http = map.next_value::<Option<_>>()?.unwrap_or_default(),
            "auth" => self.auth = map.next_value::<Option<_>>()?.unwrap_or_default(),
            "cluster" => self.cluster = map.next_value::<Option<_>>()?.unwrap_or_default(),
            "max_body_bytes" => self.top_level_max_body_bytes = map.next_value()?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl<'de> Deserialize<'de> for FileConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_keys(deserializer)
    }
}

pub(super) fn read(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let parse_error = |message: String| ConfigError::Parse {
        path: path.to_owned(),
        message,
    };
    let mut file: FileConfig =
        yaml_serde::from_str(&text).map_err(|error| parse_error(error.to_string()))?;
    if let Some(bytes) = file.top_level_max_body_bytes.take() {
        if file.http.max_body_bytes.is_some() {
            return Err(parse_error(
                "max_body_bytes is set both at the top level and in the http section; keep one"
                    .into(),
            ));
        }
        file.http.max_body_bytes = Some(bytes);
    }
    Ok(file)
}
