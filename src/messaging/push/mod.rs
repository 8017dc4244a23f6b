//! Push subscriptions: the gateway consumes a queue on the app's behalf and POSTs each message
//! to the app's URL (carrot's `Consumer.wait()` with the app's endpoint as the callback).
//!
//! Delivery is at least once. A message is acked only after the app answered 2xx, so a gateway
//! that dies or loses its channel mid-delivery leaves it to be delivered again. With
//! `concurrency: 1` messages reach the app in queue order (a retried message holds back the
//! ones behind it); with more, up to that many are in flight at once, in no set order.

mod delivery;
mod live;
mod registry;
mod retry;
mod runner;
pub mod spec;
mod webhook;

pub use live::LiveState;
pub use registry::{PushError, Subscription, Subscriptions};
pub use spec::{SubscriptionRequest, SubscriptionSpec};
pub use webhook::ATTEMPT_HEADER;
