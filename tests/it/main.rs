//! Integration tests: the real gateway against the real RabbitMQ, checked with our own AMQP client.

mod batch;
mod consume;
mod errors;
mod openapi;
mod outage;
mod publish;
mod support;
mod topology;
