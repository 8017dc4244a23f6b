//! What the document says that utoipa's macros cannot: the bearer scheme, raw bodies as binary,
//! optional declare bodies, and the two answers of a publish.

use serde_json::{Value, json};

use super::problems;

pub fn complete(document: &mut Value) {
    open_objects(document);
    security(document);
    problem_schema(document);
    names(document);
    publish(document);
    for operation in ["declare_queue", "declare_exchange"] {
        // An empty body declares with every default, as carrot's declare() does.
        if let Some(body) =
            operation_mut(document, operation).and_then(|op| op.get_mut("requestBody"))
        {
            body["required"] = json!(false);
        }
    }
    raw_message(document);
    for operation in ["stream_queue", "stream_consumer"] {
        if let Some(operation) = operation_mut(document, operation) {
            // One event, as OpenAPI 3.2's `itemSchema` would say it: its data is JSON.
            operation["responses"]["200"]["content"]["text/event-stream"] = json!({
                "schema": {
                    "type": "object",
                    "required": ["event", "data"],
                    "properties": {
                        "event": {"type": "string", "enum": ["message", "error"]},
                        "data": {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "contentSchema": {"oneOf": [
                                {"$ref": "#/components/schemas/Envelope"},
                                {"$ref": "#/components/schemas/Problem"},
                            ]},
                        },
                    },
                },
            });
            operation["responses"]["200"]["description"] = json!(
                "Server-Sent Events: a `message` event per delivery, its data an Envelope; an \
                 `error` event, its data a Problem, when the consumer ends (the queue was \
                 deleted, the connection lost); `heartbeat` comments while idle. Unsettled \
                 messages go back when the client disconnects."
            );
        }
    }
    // A queue can never be exclusive through the gateway (see QueueSpec).
    document["components"]["schemas"]["QueueSpec"]["properties"]["exclusive"]["const"] =
        json!(false);
}

/// Queue and exchange names in paths: AMQP short strings, 1 to 255 bytes.
fn names(document: &mut Value) {
    let Some(paths) = document["paths"].as_object_mut() else {
        return;
    };
    let operations = paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut());
    for operation in operations {
        let Some(parameters) = operation
            .get_mut("parameters")
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for parameter in parameters {
            if parameter["in"] == "path"
                && matches!(parameter["name"].as_str(), Some("queue" | "exchange"))
            {
                parameter["schema"] = json!({"type": "string", "minLength": 1, "maxLength": 255});
            }
        }
    }
}

/// Free-form objects (headers, arguments) say so: without `additionalProperties`, generators
/// take an object without properties for one that must stay empty.
fn open_objects(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let is_object = match map.get("type") {
                Some(Value::String(kind)) => kind == "object",
                Some(Value::Array(kinds)) => kinds.iter().any(|kind| kind == "object"),
                _ => false,
            };
            let described = [
                "properties",
                "additionalProperties",
                "allOf",
                "oneOf",
                "anyOf",
                "$ref",
            ]
            .iter()
            .any(|key| map.contains_key(*key));
            if is_object && !described {
                map.insert("additionalProperties".into(), json!(true));
            }
            map.values_mut().for_each(open_objects);
        }
        Value::Array(items) => items.iter_mut().for_each(open_objects),
        _ => {}
    }
}

/// Bearer tokens, needed only when the gateway has tokens configured.
fn security(document: &mut Value) {
    document["components"]["securitySchemes"] = json!({"bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "A token of the gateway's config file (`auth.tokens`); not needed when the \
                        gateway runs without tokens.",
    }});
    document["security"] = json!([{}, {"bearer": []}]);
    for operation in problems::OPEN {
        if let Some(operation) = operation_mut(document, operation) {
            operation["security"] = json!([]);
        }
    }
}

fn problem_schema(document: &mut Value) {
    let problem = &mut document["components"]["schemas"]["Problem"];
    problem["properties"]["code"]["enum"] = json!(problems::all_codes());
    problem["properties"]["status"] = json!({"type": "integer", "minimum": 400, "maximum": 599});
    problem["additionalProperties"] = json!(false);
}

/// A publish takes any bytes (raw mode) or a batch document, and answers accordingly.
fn publish(document: &mut Value) {
    let Some(operation) = operation_mut(document, "publish_messages") else {
        return;
    };
    operation["requestBody"] = json!({
        "required": true,
        "description": "Raw mode: any body, published byte for byte; send it with its own \
                        Content-Type (JSON, text, ...), which becomes the message's content_type. \
                        Batch mode: a BatchRequest with Content-Type application/vnd.carrot.batch+json.",
        "content": {
            // Text first: the reference page then offers a text box. Any other Content-Type
            // (JSON, say) works the same; generators only need one text and one binary form.
            "text/plain": {"schema": {"type": "string"}, "example": "{\"id\": 42}"},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "application/vnd.carrot.batch+json": {
                "schema": {"$ref": "#/components/schemas/BatchRequest"}
            },
        },
    });
    operation["responses"]["200"] = json!({
        "headers": {"Idempotent-Replayed": {
            "description": "`true` on the kept answer of an earlier request with the same Idempotency-Key",
            "schema": {"type": "string", "enum": ["true"]},
        }},
        "description": "Confirmed by the broker: `routed` in raw mode, one result per message in \
                        batch mode; with `reply=wait`, the reply in the envelope of `/next` \
                        (with `format=raw` too, its bytes as `/next/raw` answers)",
        "content": {"application/json": {
            "schema": {"oneOf": [
                {"$ref": "#/components/schemas/PublishResponse"},
                {"$ref": "#/components/schemas/BatchResponse"},
                {"$ref": "#/components/schemas/Envelope"},
            ]},
            "examples": {
                "routed": {"summary": "Raw mode, routed", "value": {"routed": true}},
                "unroutable": {"summary": "Raw mode, no queue took it",
                    "value": {"routed": false, "reply_code": 312, "reply_text": "NO_ROUTE"}},
                "batch": {"summary": "Batch mode", "value": {"results": [
                    {"routed": true},
                    {"routed": false, "reply_code": 312, "reply_text": "NO_ROUTE"},
                ]}},
            },
        }},
    });
}

/// A message as its own bytes, with everything else in `Amqp-*` headers.
fn raw_message(document: &mut Value) {
    let Some(operation) = operation_mut(document, "next_message_raw") else {
        return;
    };
    let header =
        |description: &str, schema: Value| json!({"description": description, "schema": schema});
    let text = json!({"type": "string"});
    operation["responses"]["200"] = json!({
        "description": "The message's body as it was published; its content_type is the \
                        Content-Type, the rest is in Amqp-* headers",
        "headers": {
            "Amqp-Exchange": header("The exchange it was published to (empty: the default exchange)", text.clone()),
            "Amqp-Routing-Key": header("Its routing key", text.clone()),
            "Amqp-Redelivered": header("`true` when delivered before", json!({"type": "string", "enum": ["true", "false"]})),
            "Amqp-Queue": header("The queue it was taken from", text.clone()),
            "Amqp-Receipt": header("Settles the lease (ack=lease)", text.clone()),
            "Amqp-Lease-Expires-At": header("RFC 3339 UTC end of the lease", text.clone()),
            "traceparent": header("W3C trace context the message carries in its AMQP headers", text.clone()),
            "tracestate": header("W3C trace state the message carries in its AMQP headers", text.clone()),
            "baggage": header("W3C baggage the message carries in its AMQP headers", text.clone()),
        },
        // Any media type, any bytes: no schema, as OpenAPI 3.1 describes arbitrary content.
        "content": {"*/*": {}},
    });
}

fn operation_mut<'a>(document: &'a mut Value, id: &str) -> Option<&'a mut Value> {
    document["paths"]
        .as_object_mut()?
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .find(|operation| operation["operationId"] == id)
}
