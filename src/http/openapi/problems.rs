//! Each operation's problem responses, generated from one table of its `code`s.
//!
//! A response per status lists the codes it may carry (`code` is an enum there), described from
//! `error::Code`, so the document cannot drift from what the handlers answer.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::super::error::Code;
use Code::*;

/// What every operation may answer, whatever it does.
const EVERYWHERE: &[Code] = &[HeadersTooLarge, InternalError];
/// Operations that need a token when the gateway has tokens configured.
const AUTHENTICATED: &[Code] = &[Unauthorized, Forbidden];
/// Operations that read a request body.
const BODY: &[Code] = &[InvalidRequest, RequestTimeout, PayloadTooLarge];
/// Operations that ask the broker.
const BROKER: &[Code] = &[BrokerUnavailable, BrokerTimeout];

/// Operations on a receipt, which another replica may hold.
const LEASE_ELSEWHERE: &[Code] = &[LeaseLost, ReplicaUnavailable];
/// Operations on a consumer set created on another replica.
const CONSUMER_ELSEWHERE: &[Code] = &[ConsumerLost, ReplicaUnavailable];

/// The operations anyone may call: probes and documents.
pub const OPEN: &[&str] = &["healthz", "readyz", "get_openapi", "get_docs"];

/// Each operation's own problems, besides the groups above.
const OPERATIONS: &[(&str, &[Code])] = &[
    (
        "publish_messages",
        &[
            UnsupportedMediaType,
            UnsupportedSerializer,
            ExchangeNotFound,
            Unroutable,
            PublishNacked,
            ConfirmLost,
            PreconditionFailed,
            ReplyTimeout,
            IdempotencyKeyInUse,
            IdempotencyKeyReused,
            IdempotencyStoreUnavailable,
        ],
    ),
    ("send_task", &[Unroutable, PublishNacked, ConfirmLost]),
    ("get_task", &[TaskNotFound]),
    ("declare_exchange", &[PreconditionFailed]),
    ("get_exchange", &[InvalidRequest, ExchangeNotFound]),
    (
        "delete_exchange",
        &[InvalidRequest, ExchangeNotFound, PreconditionFailed],
    ),
    ("declare_queue", &[ExchangeNotFound, PreconditionFailed]),
    (
        "get_queue",
        &[InvalidRequest, QueueNotFound, PreconditionFailed],
    ),
    (
        "delete_queue",
        &[InvalidRequest, QueueNotFound, PreconditionFailed],
    ),
    (
        "purge_queue",
        &[InvalidRequest, QueueNotFound, PreconditionFailed],
    ),
    (
        "bind_queue",
        &[QueueNotFound, ExchangeNotFound, PreconditionFailed],
    ),
    (
        "unbind_queue",
        &[QueueNotFound, ExchangeNotFound, PreconditionFailed],
    ),
    (
        "next_message",
        &[InvalidRequest, QueueNotFound, PreconditionFailed],
    ),
    (
        "next_message_raw",
        &[InvalidRequest, QueueNotFound, PreconditionFailed],
    ),
    (
        "get_messages",
        &[InvalidRequest, QueueNotFound, PreconditionFailed],
    ),
    (
        "stream_queue",
        &[InvalidRequest, QueueNotFound, PreconditionFailed],
    ),
    ("ack_message", &[InvalidRequest, ReceiptNotFound]),
    ("reject_message", &[InvalidRequest, ReceiptNotFound]),
    ("requeue_message", &[InvalidRequest, ReceiptNotFound]),
    ("extend_lease", &[InvalidRequest, ReceiptNotFound]),
    ("create_consumer", &[QueueNotFound, PreconditionFailed]),
    ("get_consumer", &[InvalidRequest, ConsumerNotFound]),
    ("delete_consumer", &[InvalidRequest, ConsumerNotFound]),
    (
        "next_from_consumer",
        &[
            InvalidRequest,
            ConsumerNotFound,
            ConsumerBusy,
            QueueNotFound,
            PreconditionFailed,
        ],
    ),
    (
        "stream_consumer",
        &[
            InvalidRequest,
            ConsumerNotFound,
            ConsumerBusy,
            QueueNotFound,
            PreconditionFailed,
        ],
    ),
    (
        "cancel_consumer_queue",
        &[
            InvalidRequest,
            ConsumerNotFound,
            QueueNotFound,
            ConsumerBusy,
        ],
    ),
    ("list_subscriptions", &[]),
    ("create_subscription", &[QueueNotFound, PreconditionFailed]),
    ("get_subscription", &[InvalidRequest, SubscriptionNotFound]),
    (
        "delete_subscription",
        &[InvalidRequest, SubscriptionNotFound],
    ),
    ("get_metrics", &[]),
    ("healthz", &[]),
    ("readyz", &[BrokerUnavailable]),
    ("get_openapi", &[]),
    ("get_docs", &[]),
];

/// Operations that read a body, and those that ask the broker.
const WITH_BODY: &[&str] = &[
    "publish_messages",
    "declare_exchange",
    "declare_queue",
    "bind_queue",
    "unbind_queue",
    "create_consumer",
    "create_subscription",
    "purge_queue",
    "send_task",
];
const ASKING_THE_BROKER: &[&str] = &[
    "publish_messages",
    "declare_exchange",
    "get_exchange",
    "delete_exchange",
    "declare_queue",
    "get_queue",
    "delete_queue",
    "purge_queue",
    "bind_queue",
    "unbind_queue",
    "next_message",
    "next_message_raw",
    "get_messages",
    "stream_queue",
    "ack_message",
    "reject_message",
    "requeue_message",
    "create_consumer",
    "next_from_consumer",
    "stream_consumer",
    "cancel_consumer_queue",
    "create_subscription",
    "send_task",
];

const ON_A_RECEIPT: &[&str] = &[
    "ack_message",
    "reject_message",
    "requeue_message",
    "extend_lease",
];
const ON_A_CONSUMER_SET: &[&str] = &[
    "get_consumer",
    "delete_consumer",
    "next_from_consumer",
    "stream_consumer",
    "cancel_consumer_queue",
];

/// Every code `operation` may answer with, sorted; `None` for an operation missing from the table.
pub fn codes(operation: &str) -> Option<Vec<Code>> {
    let (_, own) = OPERATIONS.iter().find(|(id, _)| *id == operation)?;
    let mut codes: Vec<Code> = own.iter().chain(EVERYWHERE).copied().collect();
    if !OPEN.contains(&operation) {
        codes.extend(AUTHENTICATED);
    }
    if WITH_BODY.contains(&operation) {
        codes.extend(BODY);
    }
    if ASKING_THE_BROKER.contains(&operation) {
        codes.extend(BROKER);
    }
    if ON_A_RECEIPT.contains(&operation) {
        codes.extend(LEASE_ELSEWHERE);
    }
    if ON_A_CONSUMER_SET.contains(&operation) {
        codes.extend(CONSUMER_ELSEWHERE);
    }
    codes.sort();
    codes.dedup();
    Some(codes)
}

/// Adds the problem responses of every operation of `document`.
///
/// Panics on an operation missing from the table: a test builds the document, so a new route
/// without its problems cannot land.
pub fn add_responses(document: &mut Value) {
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for operation in item.values_mut() {
            let id = operation["operationId"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let codes = codes(&id)
                .unwrap_or_else(|| panic!("operation {id} has no entry in the problems table"));
            let responses = operation["responses"]
                .as_object_mut()
                .expect("every operation has responses");
            for (status, response) in by_status(&codes) {
                responses.insert(status, response);
            }
        }
    }
}

fn by_status(codes: &[Code]) -> BTreeMap<String, Value> {
    let mut grouped: BTreeMap<u16, Vec<Code>> = BTreeMap::new();
    for code in codes {
        grouped
            .entry(code.status().as_u16())
            .or_default()
            .push(*code);
    }
    grouped
        .into_iter()
        .map(|(status, codes)| (status.to_string(), response(status, &codes)))
        .collect()
}

fn response(status: u16, codes: &[Code]) -> Value {
    let description = codes
        .iter()
        .map(|code| format!("`{}`: {}", code.name(), code.title()))
        .collect::<Vec<_>>()
        .join("; ");
    let names: Vec<&str> = codes.iter().map(|code| code.name()).collect();
    let first = codes[0];
    let example = json!({
        "type": format!("urn:carrot-gateway:problem:{}", first.name()),
        "title": first.title(),
        "status": status,
        "detail": "what was wrong, and what to do about it",
        "code": first.name(),
    });
    let mut response = json!({
        "description": description,
        "content": {"application/problem+json": {"example": example, "schema": {
            "allOf": [
                {"$ref": "#/components/schemas/Problem"},
                {"type": "object", "properties": {
                    "code": {"type": "string", "enum": names},
                }},
            ],
        }}},
    });
    let mut headers = serde_json::Map::new();
    if codes.contains(&BrokerUnavailable) {
        headers.insert(
            "Retry-After".into(),
            json!({"description": "Seconds until the gateway tries the broker again (broker_unavailable)",
                   "schema": {"type": "integer", "minimum": 1}}),
        );
    }
    if codes.contains(&Unauthorized) {
        headers.insert(
            "WWW-Authenticate".into(),
            json!({"description": "The bearer scheme to use", "schema": {"type": "string"}}),
        );
    }
    if !headers.is_empty() {
        response["headers"] = Value::Object(headers);
    }
    response
}

/// The `Problem` schema's `code`: one of these words.
pub fn all_codes() -> Vec<&'static str> {
    let mut names: Vec<&str> = Code::ALL.iter().map(|code| code.name()).collect();
    names.sort_unstable();
    names.dedup();
    names
}
