//! Broker addresses: one URL, or the nodes of a cluster as a comma-separated list (flag and
//! variable) or a YAML list (file).

use std::fmt;
use std::str::FromStr;

use serde::de::{Deserialize, Deserializer, Error, SeqAccess, Visitor};

use super::settings::Setting;

/// The broker URLs in the order given; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpUrls(pub Vec<String>);

impl Setting for AmqpUrls {
    type Input = AmqpUrls;
}

impl AmqpUrls {
    /// A single broker.
    pub fn one(url: impl Into<String>) -> Self {
        Self(vec![url.into()])
    }

    fn parse<'a>(urls: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let urls: Vec<String> = urls
            .into_iter()
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(str::to_owned)
            .collect();
        if urls.is_empty() {
            return Err(
                "give at least one broker URL, e.g. amqp://guest:guest@127.0.0.1:5672/%2f; \
                 several nodes of one cluster are separated by commas"
                    .to_owned(),
            );
        }
        Ok(Self(urls))
    }
}

impl FromStr for AmqpUrls {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        // A comma cannot occur unescaped in an AMQP URL's host, port or vhost.
        Self::parse(text.split(','))
    }
}

impl fmt::Display for AmqpUrls {
    fn fmt(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str(&self.0.join(","))
    }
}

impl<'de> Deserialize<'de> for AmqpUrls {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UrlsVisitor;

        impl<'de> Visitor<'de> for UrlsVisitor {
            type Value = AmqpUrls;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a broker URL, or a list of the URLs of a cluster's nodes")
            }

            fn visit_str<E: Error>(self, text: &str) -> Result<AmqpUrls, E> {
                text.parse().map_err(E::custom)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AmqpUrls, A::Error> {
                let mut urls = Vec::new();
                while let Some(url) = seq.next_element::<String>()? {
                    urls.push(url);
                }
                AmqpUrls::parse(urls.iter().map(String::as_str)).map_err(A::Error::custom)
            }
        }

        deserializer.deserialize_any(UrlsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comma_separated_list_keeps_its_order_and_drops_blanks() {
        let urls: AmqpUrls = "amqp://a:5672/%2f, amqp://b:5673/%2f,,"
            .parse()
            .expect("valid");
        assert_eq!(urls.0, ["amqp://a:5672/%2f", "amqp://b:5673/%2f"]);
        assert_eq!(urls.to_string(), "amqp://a:5672/%2f,amqp://b:5673/%2f");
    }

    #[test]
    fn the_file_takes_a_string_or_a_list() {
        let one: AmqpUrls = yaml_serde::from_str("amqp://a/%2f").expect("a string");
        assert_eq!(one.0, ["amqp://a/%2f"]);
        let many: AmqpUrls = yaml_serde::from_str("[amqp://a/%2f, amqp://b/%2f]").expect("a list");
        assert_eq!(many.0, ["amqp://a/%2f", "amqp://b/%2f"]);
        let error = yaml_serde::from_str::<AmqpUrls>("[]").expect_err("empty");
        assert!(
            error.to_string().contains("at least one broker URL"),
            "{error}"
        );
    }
}
