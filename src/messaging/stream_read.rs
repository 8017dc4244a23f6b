//! Stream queues read by offset: a page of messages from an offset, and named readers whose
//! place is kept on the broker so that the next read goes on where the last one ended.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::envelope::Envelope;
use crate::broker::{self, Broker, StreamOffset};

/// How long a page waits for the next message once it has one: a stream delivers what it
/// holds back to back, so a pause this long means the reader has caught up.
const CAUGHT_UP: Duration = Duration::from_millis(100);

/// What a named reader may be called: its name goes into stored messages' headers.
pub fn check_reader(name: &str) -> Result<(), String> {
    let fits = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if fits {
        Ok(())
    } else {
        Err(format!(
            "consumer={name:?} must be 1 to 64 letters, digits, '.', '_' or '-'"
        ))
    }
}

/// Reads `first`, `last`, `next`, an offset, or an RFC 3339 time.
pub fn parse_offset(text: &str) -> Result<StreamOffset, String> {
    match text {
        "first" => Ok(StreamOffset::First),
        "last" => Ok(StreamOffset::Last),
        "next" => Ok(StreamOffset::Next),
        _ if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => text
            .parse()
            .map(StreamOffset::At)
            .map_err(|_| format!("offset={text} is larger than any stream offset")),
        _ => humantime::parse_rfc3339_weak(text)
            .map(StreamOffset::Since)
            .map_err(|_| {
                format!(
                    "offset={text:?} is not first, last, next, a whole number or an RFC 3339 \
                     time such as 2026-12-06T10:00:00Z"
                )
            }),
    }
}

/// One read of a stream.
pub struct PageRequest {
    /// Where to start; `None` goes on after the named reader's stored offset.
    pub offset: Option<StreamOffset>,
    /// A named reader whose offset the broker keeps.
    pub reader: Option<String>,
    pub limit: u16,
    /// How long to wait for a first message when none is there.
    pub wait: Duration,
    pub decode: bool,
}

/// Where a read starts: as asked, else after the reader's stored offset, else (a reader's first
/// read) the stream's first message, so that a new reader misses nothing. Also the stored
/// offset it went on from, if it did.
async fn start(
    broker: &Broker,
    queue: &str,
    request: &PageRequest,
) -> Result<(StreamOffset, Option<u64>), broker::Error> {
    if let Some(offset) = &request.offset {
        return Ok((offset.clone(), None));
    }
    if let Some(reader) = &request.reader
        && let Some(stored) = broker.stored_offset(queue, reader).await?
    {
        return Ok((StreamOffset::At(stored.saturating_add(1)), Some(stored)));
    }
    let from = if request.reader.is_some() {
        StreamOffset::First
    } else {
        StreamOffset::Next
    };
    Ok((from, None))
}

/// Up to `limit` messages from the request's offset, each with its own; a named reader's
/// offset is stored once the page is complete.
pub async fn read_page(
    broker: &Broker,
    queue: &str,
    request: &PageRequest,
    shutdown: &CancellationToken,
) -> Result<Vec<Envelope>, broker::Error> {
    let (from, stored) = start(broker, queue, request).await?;
    let mut page = pull(broker, queue, &from, request, shutdown).await?;
    if let (true, Some(reader), Some(stored)) = (page.is_empty(), &request.reader, stored)
        && beyond_the_end(broker, queue, stored, shutdown).await?
    {
        // Offsets only grow, so the stream was deleted and declared again since the reader's
        // last page: its place there means nothing now; it starts over.
        tracing::info!(%queue, %reader, stored, "stored offset beyond the stream's end; reading from its first message");
        page = pull(broker, queue, &StreamOffset::First, request, shutdown).await?;
        if page.is_empty() {
            broker.forget_offset(queue, reader).await?;
        }
    }
    if let (Some(reader), Some(last)) = (&request.reader, page.last().and_then(|e| e.offset)) {
        broker.store_offset(queue, reader, last).await?;
    }
    Ok(page)
}

/// Whether the stream now ends before `stored`: reading from that offset gives nothing. While
/// the stream still reaches it, the message there (or the first one kept, if it was truncated
/// away) comes at once.
async fn beyond_the_end(
    broker: &Broker,
    queue: &str,
    stored: u64,
    shutdown: &CancellationToken,
) -> Result<bool, broker::Error> {
    let probe = PageRequest {
        offset: None,
        reader: None,
        limit: 1,
        wait: Duration::ZERO,
        decode: false,
    };
    let at = pull(broker, queue, &StreamOffset::At(stored), &probe, shutdown).await?;
    Ok(at.is_empty())
}

/// Consumes from `from` until the page is full or the stream pauses, then lets go.
async fn pull(
    broker: &Broker,
    queue: &str,
    from: &StreamOffset,
    request: &PageRequest,
    shutdown: &CancellationToken,
) -> Result<Vec<Envelope>, broker::Error> {
    let mut consumers = broker.consume_stream(queue, from, request.limit).await?;
    let mut page = Vec::new();
    let mut handles = Vec::new();
    let first_wait = request.wait.max(CAUGHT_UP);
    let failure = loop {
        if page.len() >= usize::from(request.limit) {
            break None;
        }
        let budget = if page.is_empty() {
            first_wait
        } else {
            CAUGHT_UP
        };
        let next = tokio::select! {
            next = tokio::time::timeout(budget, consumers.next()) => next,
            () = shutdown.cancelled() => break None,
        };
        let consumed = match next {
            Err(_) | Ok(None) => break None,
            Ok(Some(Err(error))) => break Some(error),
            Ok(Some(Ok(consumed))) => consumed,
        };
        if consumed.delivered.offset.is_none() {
            // The broker refuses offsets on other queues; should one deliver anyway, dropping
            // the handle puts the message back where it was.
            drop(consumed);
            let _ = consumers.close().await;
            return Err(broker::not_a_stream(queue));
        }
        page.push(Envelope::new(&consumed.delivered, request.decode).from_queue(queue));
        handles.push(consumed.handle);
    };
    // A stream keeps what it delivered; the acks only end the deliveries cleanly.
    for handle in handles {
        let _ = handle.ack().await;
    }
    let _ = consumers.close().await;
    match failure {
        Some(error) if page.is_empty() => Err(error),
        _ => Ok(page),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn offsets_parse_as_words_numbers_or_times() {
        assert_eq!(parse_offset("first"), Ok(StreamOffset::First));
        assert_eq!(parse_offset("last"), Ok(StreamOffset::Last));
        assert_eq!(parse_offset("next"), Ok(StreamOffset::Next));
        assert_eq!(parse_offset("0"), Ok(StreamOffset::At(0)));
        assert_eq!(parse_offset("42"), Ok(StreamOffset::At(42)));
        let since = parse_offset("2026-12-06T10:00:00Z").expect("a time");
        assert_eq!(
            since,
            StreamOffset::Since(SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_551_200))
        );
        for bad in ["", "-1", "1.5", "yesterday", "99999999999999999999999"] {
            assert!(parse_offset(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn reader_names_are_short_and_plain() {
        assert!(check_reader("billing-1.v2_a").is_ok());
        for bad in ["", "a b", "é", &"x".repeat(65)] {
            assert!(check_reader(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
