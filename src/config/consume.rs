//! The consume section: how long readers may hold messages and wait for them, and when an
//! unused consumer set goes. Top-level keys of the file.

use std::time::Duration;

use super::ConfigError;
use super::settings::settings;
use crate::messaging::consume::ConsumeLimits;

settings! {
    /// Leases, long polls and consumer sets.
    #[command(next_help_heading = "Consuming")]
    pub struct ConsumeArgs;

    /// Leases, long polls and consumer sets, resolved.
    pub struct ConsumeConfig {
        /// Time a leased message stays out of its queue unless the request says.
        #[arg(long, env = "CARROT_LEASE_DEFAULT", value_name = "DURATION")]
        pub lease_default: Duration = "30s",

        /// Longest lease a client may ask for; keep it below RabbitMQ's consumer_timeout (30
        /// minutes by default).
        #[arg(long, env = "CARROT_LEASE_MAX", value_name = "DURATION")]
        pub lease_max: Duration = "15m",

        /// Longest long poll (`wait=`) a client may ask for.
        #[arg(long, env = "CARROT_WAIT_MAX", value_name = "DURATION")]
        pub wait_max: Duration = "20s",

        /// Time after which an unused consumer set is deleted and its messages returned.
        #[arg(long, env = "CARROT_CONSUMER_IDLE", value_name = "DURATION")]
        pub consumer_idle: Duration = "5m",
    }
}

impl ConsumeConfig {
    /// What `Consumption::new` takes.
    pub fn limits(&self) -> ConsumeLimits {
        ConsumeLimits {
            lease_default: self.lease_default,
            lease_max: self.lease_max,
            wait_max: self.wait_max,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.lease_default.is_zero() || self.lease_default > self.lease_max {
            return Err(ConfigError::Invalid {
                key: "lease_default",
                message: format!(
                    "must be between 1 and lease_max ({} s)",
                    self.lease_max.as_secs()
                ),
            });
        }
        Ok(())
    }
}
