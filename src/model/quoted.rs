//! Strings that RabbitMQ quotes back in the error replies that close a channel.
//!
//! RabbitMQ cuts a reply text longer than 255 bytes to 252 bytes and `...`, counting bytes. A cut
//! inside a multi-byte character leaves a text that is not UTF-8; the AMQP client cannot parse
//! that reply and drops the whole connection, with every other request on it. So a string the
//! broker may quote is accepted only where no cut can fall inside one of its characters: plain
//! ASCII, or short enough to end before byte 252 in every reply that quotes it.

use super::Invalid;

/// Where RabbitMQ cuts a long reply text.
const CUT_AT: usize = 252;

/// The most text RabbitMQ puts before a queue or exchange name, with room to spare: the longest
/// seen is "PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-routing-key' for queue '" (78
/// bytes), and other queue types compare arguments with names up to 31 bytes (84).
const NAME_OFFSET: usize = 90;

/// "PRECONDITION_FAILED - user_id property set to '" is 47 bytes; again with room to spare.
const USER_ID_OFFSET: usize = 52;

/// The longest queue or exchange name with non-ASCII characters: 162 bytes.
pub const MAX_NON_ASCII_NAME: usize = CUT_AT - NAME_OFFSET;

/// The longest `user_id` with non-ASCII characters: 200 bytes.
pub const MAX_NON_ASCII_USER_ID: usize = CUT_AT - USER_ID_OFFSET;

/// Checks a queue or exchange name; `what` names the field.
pub fn check_quoted_name(what: &str, name: &str) -> Result<(), Invalid> {
    check_quoted(what, name, MAX_NON_ASCII_NAME)
}

/// Checks `user_id`, which RabbitMQ quotes when it is not the gateway's broker user.
pub fn check_quoted_user_id(user_id: &str) -> Result<(), Invalid> {
    check_quoted("user_id", user_id, MAX_NON_ASCII_USER_ID)
}

fn check_quoted(what: &str, value: &str, max: usize) -> Result<(), Invalid> {
    if value.is_ascii() || value.len() <= max {
        return Ok(());
    }
    Err(Invalid(format!(
        "{what} has non-ASCII characters and is {} bytes long; with non-ASCII characters it may \
         be at most {max} bytes, because RabbitMQ cuts the error replies that quote it at 255 \
         bytes and a cut inside a character breaks the broker connection: shorten it",
        value.len()
    )))
}

/// Checks a value RabbitMQ compares when a queue or exchange is declared again, and then
/// quotes after other strings of any length: only ASCII is sure to be cut safely.
pub fn check_compared_value(what: &str, value: &str) -> Result<(), Invalid> {
    if value.is_ascii() {
        return Ok(());
    }
    Err(Invalid(format!(
        "{what} must be ASCII: RabbitMQ quotes declare arguments in the error reply to a \
         declaration with other settings, cuts that reply at 255 bytes, and a cut inside a \
         character breaks the broker connection"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_names_of_any_length_pass() {
        assert!(check_quoted_name("queue name", &"q".repeat(255)).is_ok());
    }

    #[test]
    fn non_ascii_names_pass_up_to_the_limit() {
        let at_limit = "é".repeat(MAX_NON_ASCII_NAME / 2);
        assert!(check_quoted_name("queue name", &at_limit).is_ok());
        let over = format!("{at_limit}é");
        let error = check_quoted_name("queue name", &over).expect_err("refused");
        assert!(error.0.starts_with("queue name has non-ASCII"), "{error}");
        assert!(error.0.contains("162"), "{error}");
    }

    #[test]
    fn compared_values_must_be_ascii() {
        assert!(check_compared_value("arguments.x-dead-letter-exchange", "dlx").is_ok());
        let error =
            check_compared_value("arguments.x-dead-letter-exchange", "é").expect_err("refused");
        assert!(error.0.contains("x-dead-letter-exchange"), "{error}");
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// What RabbitMQ sends for a reply text: over 255 bytes, the first 252 and "...".
    fn as_rabbitmq_cuts_it(text: &str) -> Vec<u8> {
        let bytes = text.as_bytes();
        if bytes.len() <= 255 {
            return bytes.to_vec();
        }
        let mut cut = bytes[..CUT_AT].to_vec();
        cut.extend_from_slice(b"...");
        cut
    }

    /// The replies that quote a queue or exchange name, around `name` (vhost `/`).
    fn replies_quoting(name: &str) -> Vec<String> {
        let tail = "' in vhost '/'";
        vec![
            format!("NOT_FOUND - no queue '{name}{tail}"),
            format!("NOT_FOUND - no exchange '{name}{tail}"),
            format!(
                "PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-routing-key' for queue \
                 '{name}{tail}: received the value 'k' of type 'longstr' but current is none"
            ),
            format!(
                "PRECONDITION_FAILED - inequivalent arg 'x-stream-max-segment-size-bytes' for \
                 queue '{name}{tail}: received the value '1' of type 'signedint' but current is none"
            ),
            format!(
                "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{name}{tail}. \
                 It could be originally declared on another connection or the exclusive property \
                 value does not match that of the original declaration."
            ),
        ]
    }

    proptest! {
        #[test]
        fn an_accepted_name_is_never_cut_inside_a_character(name in "\\PC{1,140}") {
            if crate::model::check_name("queue", &name).is_ok() {
                for reply in replies_quoting(&name) {
                    let sent = as_rabbitmq_cuts_it(&reply);
                    prop_assert!(String::from_utf8(sent).is_ok(), "{reply}");
                }
            }
        }

        #[test]
        fn an_accepted_user_id_is_never_cut_inside_a_character(user_id in "\\PC{1,130}") {
            if check_quoted_user_id(&user_id).is_ok() && user_id.len() <= 255 {
                let reply = format!(
                    "PRECONDITION_FAILED - user_id property set to '{user_id}' but \
                     authenticated user was 'guest'"
                );
                prop_assert!(String::from_utf8(as_rabbitmq_cuts_it(&reply)).is_ok());
            }
        }
    }
}
