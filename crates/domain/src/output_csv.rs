//! The output CSV (DESIGN §3): the input columns plus `Output Image Urls`, aligned position by
//! position with the inputs, and per-image status and error-code columns so a failed image
//! leaves an empty slot instead of shifting the others; `Image Scores` gives each stored image's
//! SSIMULACRA2 score against its source, in the same alignment.

use super::model::{ImageStatus, RowRecord, RowState};

/// Header of the output CSV.
pub const OUTPUT_COLUMNS: [&str; 7] = [
    "S. No.",
    "Product Name",
    "Input Image Urls",
    "Output Image Urls",
    "Image Statuses",
    "Image Errors",
    "Image Scores",
];

/// Separator inside a list cell. A comma plus space, as in the input format; split on `,` and
/// trim to read it back, and empty slots keep their position.
pub const LIST_SEPARATOR: &str = ", ";

/// Writes the output CSV for `rows` (in input order) as UTF-8 with CRLF line ends (RFC 4180).
/// A row that never finished has `PENDING` statuses and empty outputs.
///
/// # Errors
/// Only if the CSV writer fails on an in-memory buffer, which is not expected.
pub fn write_output_csv(rows: &[RowRecord]) -> Result<Vec<u8>, csv::Error> {
    let mut bytes = output_csv_header()?;
    bytes.extend(output_csv_rows(rows)?);
    Ok(bytes)
}

/// The header line of the output CSV (CRLF-terminated), to write a large output in pages:
/// `output_csv_header()` then `output_csv_rows(page)` for every page, in order, gives exactly
/// [`write_output_csv`] of all the rows.
///
/// # Errors
/// Only if the CSV writer fails on an in-memory buffer, which is not expected.
pub fn output_csv_header() -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    writer.write_record(OUTPUT_COLUMNS)?;
    writer.into_inner().map_err(|e| e.into_error().into())
}

/// The lines of `rows` in the output CSV, without the header (see [`output_csv_header`]).
///
/// # Errors
/// Only if the CSV writer fails on an in-memory buffer, which is not expected.
pub fn output_csv_rows(rows: &[RowRecord]) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    for row in rows {
        let (outputs, statuses, errors, scores) = image_columns(row);
        writer.write_record([
            neutralise(&row.serial),
            neutralise(&row.product_name),
            neutralise(&row.input_urls.join(LIST_SEPARATOR)),
            neutralise(&outputs),
            statuses,
            neutralise(&errors),
            scores,
        ])?;
    }
    writer.into_inner().map_err(|e| e.into_error().into())
}

fn image_columns(row: &RowRecord) -> (String, String, String, String) {
    let mut scores = Vec::with_capacity(row.input_urls.len());
    let mut outputs = Vec::with_capacity(row.input_urls.len());
    let mut statuses = Vec::with_capacity(row.input_urls.len());
    let mut errors = Vec::with_capacity(row.input_urls.len());
    for position in 0..row.input_urls.len() {
        let outcome = (row.state == RowState::Done)
            .then(|| row.images.get(position))
            .flatten();
        match outcome {
            Some(image) if image.status == ImageStatus::Ok => {
                outputs.push(image.output_url.clone().unwrap_or_default());
                statuses.push("OK");
                errors.push(String::new());
                scores.push(image.score.map(|s| s.to_string()).unwrap_or_default());
            }
            Some(image) => {
                outputs.push(String::new());
                statuses.push("FAILED");
                errors.push(image.error_code.clone().unwrap_or_default());
                scores.push(String::new());
            }
            None => {
                outputs.push(String::new());
                statuses.push("PENDING");
                errors.push(String::new());
                scores.push(String::new());
            }
        }
    }
    // A row without failures gets an empty error cell rather than a run of separators.
    let errors = if errors.iter().all(String::is_empty) {
        String::new()
    } else {
        errors.join(LIST_SEPARATOR)
    };
    (
        outputs.join(LIST_SEPARATOR),
        statuses.join(LIST_SEPARATOR),
        errors,
        scores.join(LIST_SEPARATOR),
    )
}

/// Neutralises a cell a spreadsheet would evaluate as a formula by prefixing `'`: cells starting
/// with `=`, `+`, `-`, `@`, tab, carriage return (OWASP "CSV Injection") or NUL (OWASP ASVS
/// 1.2.10). The writer then quotes the cell and doubles its quotes as RFC 4180 §2.6–2.7 ask,
/// which together give OWASP's escaping: `=1+2";=1+2` is written `"'=1+2"";=1+2"`.
#[must_use]
pub fn neutralise(cell: &str) -> String {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r' | '\0') => format!("'{cell}"),
        _ => cell.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ImageOutcome;

    fn row(urls: &[&str], images: Vec<ImageOutcome>) -> RowRecord {
        RowRecord {
            index: 0,
            serial: "1.".into(),
            product_name: "=HYPERLINK(\"http://evil\")".into(),
            input_urls: urls.iter().map(|u| (*u).to_owned()).collect(),
            state: RowState::Done,
            images,
            progress: Vec::new(),
        }
    }

    fn ok(url: &str) -> ImageOutcome {
        ImageOutcome {
            status: ImageStatus::Ok,
            output_url: Some(url.into()),
            ..ImageOutcome::failed("", "")
        }
    }

    #[test]
    fn failed_image_leaves_an_empty_slot_and_nothing_shifts() {
        let rows = [row(
            &["http://a/1.jpg", "http://a/2.jpg", "http://a/3.jpg"],
            vec![
                ok("http://o/1.jpg"),
                ImageOutcome::failed("http_404", "not found"),
                ok("http://o/3.jpg"),
            ],
        )];
        let text = String::from_utf8(write_output_csv(&rows).unwrap()).unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let record = reader.records().next().unwrap().unwrap();
        let outputs: Vec<&str> = record[3].split(',').map(str::trim).collect();
        assert_eq!(outputs, vec!["http://o/1.jpg", "", "http://o/3.jpg"]);
        let errors: Vec<&str> = record[5].split(',').map(str::trim).collect();
        assert_eq!(errors, vec!["", "http_404", ""]);
        assert_eq!(&record[4], "OK, FAILED, OK");
        assert_eq!(reader.headers().unwrap().len(), OUTPUT_COLUMNS.len());
    }

    #[test]
    fn scores_line_up_with_the_outputs_and_failed_images_have_none() {
        let scored = |url: &str, score: f64| ImageOutcome {
            score: crate::model::Score::new(score),
            ..ok(url)
        };
        let rows = [row(
            &["http://a/1.jpg", "http://a/2.jpg", "http://a/3.jpg"],
            vec![
                scored("http://o/1.jpg", 71.234),
                ImageOutcome::failed("http_404", "not found"),
                scored("http://o/3.jpg", 69.5),
            ],
        )];
        let text = String::from_utf8(write_output_csv(&rows).unwrap()).unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        assert_eq!(&reader.headers().unwrap()[6], "Image Scores");
        let record = reader.records().next().unwrap().unwrap();
        assert_eq!(&record[6], "71.23, , 69.50");
    }

    #[test]
    fn rows_without_failures_have_an_empty_error_cell() {
        let rows = [row(
            &["http://a/1.jpg", "http://a/2.jpg"],
            vec![ok("http://o/1.jpg"), ok("http://o/2.jpg")],
        )];
        let text = String::from_utf8(write_output_csv(&rows).unwrap()).unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let record = reader.records().next().unwrap().unwrap();
        assert_eq!(&record[5], "");
        assert_eq!(&record[4], "OK, OK");
    }

    #[test]
    fn formula_cells_are_neutralised() {
        let rows = [row(&["http://a/1.jpg"], vec![ok("http://o/1.jpg")])];
        let text = String::from_utf8(write_output_csv(&rows).unwrap()).unwrap();
        assert!(text.contains("'=HYPERLINK"));
        for prefix in ["+1", "-1", "@x", "\tx", "\rx", "\0x"] {
            assert!(neutralise(prefix).starts_with('\''));
        }
        assert_eq!(neutralise("1."), "1.");
    }

    /// OWASP's own examples, byte for byte, and a leading NUL.
    #[test]
    fn cells_are_escaped_exactly_as_owasp_shows() {
        for (input, escaped) in [
            ("=1+2\";=1+2", "\"'=1+2\"\";=1+2\""),
            ("=1+2'\" ;,=1+2", "\"'=1+2'\"\" ;,=1+2\""),
            ("\0=cmd", "'\0=cmd"),
        ] {
            let mut record = row(&["http://a/1.jpg"], vec![ok("http://o/1.jpg")]);
            record.product_name = input.to_owned();
            let text = String::from_utf8(write_output_csv(&[record]).unwrap()).unwrap();
            let line = text.lines().nth(1).unwrap();
            let cell = line.strip_prefix("1.,").unwrap();
            assert!(cell.starts_with(escaped), "{input:?} → {line:?}");
            assert_eq!(&cell[escaped.len()..escaped.len() + 1], ",");
        }
    }

    proptest::proptest! {
        /// Whatever text a row holds, reading the output CSV back (RFC 4180) gives each cell
        /// as written: the text itself, or — for a cell a spreadsheet would run — the text
        /// behind one `'`. Line ends, quotes, commas and every other character survive.
        #[test]
        fn every_cell_reads_back_as_written(serial in "\\PC*", name in ".*", url in "\\PC*") {
            let mut record = row(&[url.as_str()], vec![ok("http://o/1.jpg")]);
            record.serial.clone_from(&serial);
            record.product_name.clone_from(&name);
            let bytes = write_output_csv(&[record]).unwrap();
            let mut reader = csv::ReaderBuilder::new().from_reader(bytes.as_slice());
            let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
            proptest::prop_assert_eq!(records.len(), 1);
            let back = &records[0];
            for (cell, original) in [(&back[0], &serial), (&back[1], &name), (&back[2], &url)] {
                let neutralised = neutralise(original);
                proptest::prop_assert_eq!(cell, neutralised.as_str());
                let restored = if neutralised == *original { cell } else { &cell[1..] };
                proptest::prop_assert_eq!(restored, original.as_str());
            }
        }
    }
}
