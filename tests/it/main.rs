//! Integration tests: the real gateway against the real RabbitMQ, checked with our own AMQP client.

mod batch;
mod config_file;
mod consume;
mod consumers;
mod discard;
mod errors;
mod idempotency;
mod isolation;
mod lanes;
mod limits;
mod nodes;
mod openapi;
mod operations;
mod outage;
mod pki;
mod publish;
mod receiver;
mod request_reply;
mod streams;
mod subscriptions;
mod support;
mod tasks;
mod tls;
mod topology;
mod trace;
mod window;
