//! The AWS service limits the adapters design for, in one place. The AWS adapters size their
//! calls by them (transactions, message batches); the embedded adapters enforce them, so a
//! local run or a test meets a limit before a deployment does. Emulators enforce few of them.

use std::ops::Range;

use serde_dynamo::{AttributeValue, Item};

use pixpress_domain::text::is_refused_char;

/// Largest DynamoDB item: 400 KB, attribute names included (Amazon DynamoDB Developer Guide,
/// "Quotas in Amazon DynamoDB" → "Item size").
pub const DYNAMODB_MAX_ITEM_BYTES: usize = 400 * 1024;

/// Most actions in one `TransactWriteItems` call: 100 (Amazon DynamoDB API Reference,
/// `TransactWriteItems`: "groups up to 100 action requests").
pub const DYNAMODB_MAX_TRANSACTION_ACTIONS: usize = 100;

/// Largest aggregate size of the items in one transaction: 4 MB (Amazon DynamoDB API
/// Reference, `TransactWriteItems`: "The aggregate size of the items in the transaction cannot
/// exceed 4 MB").
pub const DYNAMODB_MAX_TRANSACTION_BYTES: usize = 4 * 1024 * 1024;

/// Largest SQS message body: 1 MiB = 1,048,576 bytes (Amazon SQS Developer Guide, "Amazon SQS
/// message quotas" → "Message size"; raised from 256 KiB in August 2025).
pub const SQS_MAX_MESSAGE_BYTES: usize = 1_048_576;

/// Most entries in one `SendMessageBatch`: 10 (Amazon SQS Developer Guide, "Amazon SQS message
/// quotas" → "Message batch").
pub const SQS_MAX_BATCH_ENTRIES: usize = 10;

/// Largest total payload of one `SendMessageBatch`, the sum of its bodies: 1 MiB (Amazon SQS
/// API Reference, `SendMessageBatch`: "the maximum total payload size … is also 1 MiB";
/// `BatchRequestTooLong` beyond it).
pub const SQS_MAX_BATCH_BYTES: usize = 1_048_576;

/// Longest S3 object key: 1,024 bytes of UTF-8 (Amazon S3 User Guide, "Naming Amazon S3
/// objects").
pub const S3_MAX_KEY_BYTES: usize = 1024;

/// Smallest part of a multipart upload but the last: 5 MiB (Amazon S3 User Guide, "Amazon S3
/// multipart upload limits"; `EntityTooSmall` on completion otherwise).
pub const S3_MIN_PART_BYTES: usize = 5 * 1024 * 1024;

/// Most parts of one multipart upload: 10,000 (same page).
pub const S3_MAX_PARTS: u32 = 10_000;

/// Size of a number attribute value as DynamoDB counts it: one byte per two significant
/// digits, plus one (Amazon DynamoDB Developer Guide, "Item sizes and formats").
fn number_size(n: &str) -> usize {
    let digits: String = n
        .chars()
        .filter(char::is_ascii_digit)
        .collect::<String>()
        .trim_matches('0')
        .to_owned();
    digits.len().div_ceil(2) + 1
}

fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        // Lists and maps: 3 bytes of overhead and 1 byte per element, plus their contents.
        AttributeValue::L(list) => 3 + list.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        AttributeValue::M(map) => {
            3 + map
                .iter()
                .map(|(k, v)| 1 + k.len() + value_size(v))
                .sum::<usize>()
        }
        AttributeValue::Ss(set) => set.iter().map(String::len).sum(),
        AttributeValue::Ns(set) => set.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(set) => set.iter().map(Vec::len).sum(),
    }
}

/// The size DynamoDB counts for `item` against [`DYNAMODB_MAX_ITEM_BYTES`]: attribute names
/// plus values, by the rules of "Item sizes and formats" (UTF-8 bytes for strings, one byte per
/// two digits for numbers, 3 bytes + 1 per element for lists and maps).
#[must_use]
pub fn dynamodb_item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

/// Checks one SQS message body against [`SQS_MAX_MESSAGE_BYTES`] and the characters SQS
/// accepts (`#x9 | #xA | #xD | #x20–#xD7FF | #xE000–#xFFFD | #x10000–#x10FFFF`).
///
/// # Errors
/// What is wrong, for the error message.
pub fn check_sqs_body(body: &str) -> Result<(), String> {
    if body.is_empty() {
        return Err("an SQS message body must hold at least one character".to_owned());
    }
    if body.len() > SQS_MAX_MESSAGE_BYTES {
        return Err(format!(
            "the message is {} bytes; SQS accepts at most {SQS_MAX_MESSAGE_BYTES}",
            body.len()
        ));
    }
    // Within a JSON body every control character is escaped except where the JSON writer
    // left raw text, so only LF/CR/tab are legal raw controls.
    if let Some(c) = body
        .chars()
        .find(|&c| is_refused_char(c) && !matches!(c, '\n' | '\r'))
    {
        return Err(format!(
            "the message holds U+{:04X}, a character SQS refuses (InvalidMessageContents)",
            u32::from(c)
        ));
    }
    Ok(())
}

/// Splits `bodies` into consecutive `SendMessageBatch` calls that respect both
/// [`SQS_MAX_BATCH_ENTRIES`] and [`SQS_MAX_BATCH_BYTES`]; each range holds at least one body.
#[must_use]
pub fn sqs_batches(bodies: &[String]) -> Vec<Range<usize>> {
    let mut batches = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, body) in bodies.iter().enumerate() {
        let full = i - start == SQS_MAX_BATCH_ENTRIES || bytes + body.len() > SQS_MAX_BATCH_BYTES;
        if full && i > start {
            batches.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += body.len();
    }
    if start < bodies.len() {
        batches.push(start..bodies.len());
    }
    batches
}

/// Splits items (given by their sizes) into consecutive transactions that respect both
/// [`DYNAMODB_MAX_TRANSACTION_ACTIONS`] (less `reserved` actions per transaction) and
/// [`DYNAMODB_MAX_TRANSACTION_BYTES`].
#[must_use]
pub fn transaction_chunks(sizes: &[usize], reserved: usize) -> Vec<Range<usize>> {
    let max_actions = DYNAMODB_MAX_TRANSACTION_ACTIONS
        .saturating_sub(reserved)
        .max(1);
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, &size) in sizes.iter().enumerate() {
        let full = i - start == max_actions || bytes + size > DYNAMODB_MAX_TRANSACTION_BYTES;
        if full && i > start {
            chunks.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < sizes.len() {
        chunks.push(start..sizes.len());
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_size_counts_names_strings_numbers_and_containers() {
        let item: Item = serde_dynamo::to_item(serde_json::json!({
            "pk": "REQ#1",
            "n": 12345,
            "l": ["ab", "c"],
        }))
        .unwrap();
        // pk: 2 + 5; n: 1 + (3 bytes for 5 digits + 1); l: 1 + 3 + (1 + 2) + (1 + 1).
        assert_eq!(dynamodb_item_size(&item), 7 + 5 + 9);
    }

    #[test]
    fn batches_respect_entry_count_and_total_bytes() {
        let small: Vec<String> = (0..25).map(|i| format!("m{i}")).collect();
        assert_eq!(sqs_batches(&small), vec![0..10, 10..20, 20..25]);
        let big = vec!["x".repeat(400_000); 5];
        // 400 KB each: two fit in 1 MiB, a third does not.
        assert_eq!(sqs_batches(&big), vec![0..2, 2..4, 4..5]);
    }

    #[test]
    fn transaction_chunks_respect_action_count_and_bytes() {
        assert_eq!(
            transaction_chunks(&[10; 250], 0),
            vec![0..100, 100..200, 200..250]
        );
        assert_eq!(transaction_chunks(&[10; 150], 1), vec![0..99, 99..150]);
        let big = vec![300 * 1024; 30];
        let chunks = transaction_chunks(&big, 0);
        assert!(
            chunks
                .iter()
                .all(|c| c.len() * 300 * 1024 <= DYNAMODB_MAX_TRANSACTION_BYTES)
        );
        assert_eq!(chunks.iter().map(ExactSizeIterator::len).sum::<usize>(), 30);
    }

    #[test]
    fn sqs_bodies_with_refused_characters_or_too_many_bytes_are_refused() {
        assert!(check_sqs_body("{\"a\":\"ok\\u0000\"}").is_ok());
        assert!(check_sqs_body("bad \u{FFFE}").is_err());
        assert!(check_sqs_body("bad \u{1}").is_err());
        assert!(check_sqs_body(&"x".repeat(SQS_MAX_MESSAGE_BYTES + 1)).is_err());
        assert!(check_sqs_body("").is_err());
    }
}
