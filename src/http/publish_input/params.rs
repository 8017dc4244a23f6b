//! The query of a raw-mode publish, and how its parameters are named.

use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

/// Query parameters of a raw-mode publish; all optional.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PublishParams {
    /// Routing key (default empty).
    #[param(max_length = 255)]
    pub routing_key: Option<String>,
    /// `1`/`transient` or `2`/`persistent` (default).
    #[param(value_type = Option<DeliveryModeParam>)]
    pub delivery_mode: Option<String>,
    /// Message priority; queues honour it up to their `x-max-priority`.
    #[param(value_type = Option<u8>, minimum = 0, maximum = 255)]
    pub priority: Option<String>,
    /// `true`: an unroutable message is a 422 instead of `{"routed": false}` (default false).
    #[param(value_type = Option<bool>)]
    pub mandatory: Option<String>,
    /// Only `false`: RabbitMQ 3.0+ has no immediate flag (`true` is a 400 that says so).
    #[param(value_type = Option<bool>)]
    pub immediate: Option<String>,
    /// Per-message TTL in milliseconds, at most 4294967295.
    #[param(pattern = "^[0-9]{1,10}$")]
    pub expiration: Option<String>,
    #[param(max_length = 255)]
    pub message_id: Option<String>,
    #[param(max_length = 255)]
    pub correlation_id: Option<String>,
    #[param(max_length = 255)]
    pub reply_to: Option<String>,
    #[serde(rename = "type")]
    #[param(rename = "type", max_length = 255)]
    pub kind: Option<String>,
    #[param(max_length = 255)]
    pub app_id: Option<String>,
    /// RabbitMQ checks it is the gateway's broker user.
    #[param(max_length = 255)]
    pub user_id: Option<String>,
    #[param(max_length = 255)]
    pub cluster_id: Option<String>,
    /// Unix seconds.
    #[param(value_type = Option<u64>, minimum = 0, maximum = 9223372036854775807_u64)]
    pub timestamp: Option<String>,
    /// Overrides the charset of the Content-Type.
    #[param(max_length = 255)]
    pub content_encoding: Option<String>,
    /// `json`, `raw`, `yaml` or `msgpack`; yaml and msgpack re-encode a JSON body (`pickle` is
    /// refused, 415).
    #[param(value_type = Option<SerializerParam>)]
    pub serializer: Option<String>,
    /// `wait`: publish as a request (`reply_to` is direct reply-to, `correlation_id` yours or
    /// one the gateway makes) and answer with the reply, in the `/next` envelope.
    #[param(value_type = Option<ReplyParam>)]
    pub reply: Option<String>,
    /// With `reply=wait`: seconds to wait for the reply before `504 reply_timeout` (default 5,
    /// at most the gateway's `wait_max`, 20 unless configured otherwise).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 20)]
    pub timeout: Option<String>,
    /// With `reply=wait`: `raw` answers with the reply's bytes as `/next/raw` does.
    #[param(value_type = Option<FormatParam>)]
    pub format: Option<String>,
}

/// `reply` as a query parameter.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum ReplyParam {
    Wait,
}

/// `format` as a query parameter.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum FormatParam {
    Json,
    Raw,
}

/// `delivery_mode` as a query parameter.
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum DeliveryModeParam {
    #[schema(rename = "1")]
    One,
    #[schema(rename = "2")]
    Two,
    #[schema(rename = "transient")]
    Transient,
    #[schema(rename = "persistent")]
    Persistent,
}

/// `serializer` as a query parameter or batch field.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum SerializerParam {
    Json,
    Raw,
    Yaml,
    Msgpack,
}

/// The first query parameter set, by its name in the query.
pub fn first_query_param(params: &PublishParams) -> Option<&'static str> {
    let PublishParams {
        routing_key,
        delivery_mode,
        priority,
        mandatory,
        immediate,
        expiration,
        message_id,
        correlation_id,
        reply_to,
        kind,
        app_id,
        user_id,
        cluster_id,
        timestamp,
        content_encoding,
        serializer,
        reply,
        timeout,
        format,
    } = params;
    [
        ("routing_key", routing_key),
        ("delivery_mode", delivery_mode),
        ("priority", priority),
        ("mandatory", mandatory),
        ("immediate", immediate),
        ("expiration", expiration),
        ("message_id", message_id),
        ("correlation_id", correlation_id),
        ("reply_to", reply_to),
        ("type", kind),
        ("app_id", app_id),
        ("user_id", user_id),
        ("cluster_id", cluster_id),
        ("timestamp", timestamp),
        ("content_encoding", content_encoding),
        ("serializer", serializer),
        ("reply", reply),
        ("timeout", timeout),
        ("format", format),
    ]
    .into_iter()
    .find_map(|(name, value)| value.is_some().then_some(name))
}
