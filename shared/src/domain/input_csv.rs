//! The input CSV contract (DESIGN §3): header `S. No.,Product Name,Input Image Urls`, one
//! product per row, the image URLs comma-separated inside one quoted cell (RFC 4180 §2).
//!
//! [`parse_input_csv`] validates the whole upload and returns every problem at once, each with
//! the row (the 1-based line number a text editor or spreadsheet shows), the column, a stable
//! code and a message a person can act on. Nothing is accepted unless everything is valid.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::text::{self, MAX_PRODUCT_NAME_BYTES, MAX_SERIAL_BYTES, is_refused_char};
use crate::fetch::NetworkPolicy;

/// Column names of the input header, in order.
pub const INPUT_COLUMNS: [&str; 3] = ["S. No.", "Product Name", "Input Image Urls"];

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Upload limits. All configurable; defaults suit API Gateway's 10 MB payload cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvLimits {
    /// Largest accepted CSV in bytes (default 5 MiB).
    pub max_bytes: usize,
    /// Most data rows (default 10,000).
    pub max_rows: usize,
    /// Most URLs in one row (default 50).
    pub max_urls_per_row: usize,
    /// Longest URL in bytes (default 2,048).
    pub max_url_length: usize,
    /// Most issues reported for one upload (default 1,000); the rest are counted.
    pub max_issues: usize,
}

impl Default for CsvLimits {
    fn default() -> Self {
        Self {
            max_bytes: 5 * 1024 * 1024,
            max_rows: 10_000,
            max_urls_per_row: 50,
            max_url_length: 2048,
            max_issues: 1000,
        }
    }
}

/// One valid data row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRow {
    /// 1-based line of the row in the file.
    pub line: u64,
    /// `S. No.` (trimmed text; `1.` is valid).
    pub serial: String,
    /// `Product Name` (trimmed).
    pub product_name: String,
    /// Input URLs in order (trimmed, empty entries dropped).
    pub input_urls: Vec<String>,
}

/// One problem found in an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsvIssue {
    /// 1-based line of the problem; absent for problems with the file as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<u64>,
    /// Column name, when the problem is in one cell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// Stable code: `too_large`, `not_utf8`, `malformed_csv`, `bad_header`, `no_rows`,
    /// `too_many_rows`, `missing_cells`, `unquoted_url_list`, `too_many_cells`,
    /// `missing_serial`, `duplicate_serial`, `serial_too_long`, `missing_product_name`,
    /// `product_name_too_long`, `invalid_character`, `missing_urls`, `too_many_urls`,
    /// `url_too_long`, `invalid_url`, `unsupported_scheme`.
    pub code: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// Why an upload was rejected: every issue found (up to [`CsvLimits::max_issues`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CsvRejection {
    /// The issues, in file order.
    pub issues: Vec<CsvIssue>,
    /// Issues found beyond `max_issues` and not listed.
    pub omitted: usize,
}

impl std::fmt::Display for CsvRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the CSV has {} error(s)",
            self.issues.len() + self.omitted
        )?;
        if let Some(first) = self.issues.first() {
            write!(f, "; first: {}", first.message)?;
        }
        Ok(())
    }
}

struct Issues {
    list: Vec<CsvIssue>,
    omitted: usize,
    max: usize,
}

impl Issues {
    fn push(&mut self, row: Option<u64>, column: Option<usize>, code: &str, message: String) {
        if self.list.len() >= self.max {
            self.omitted += 1;
            return;
        }
        // Messages quote cells; a bounded message keeps a 500 KB cell out of the stored item.
        self.list.push(CsvIssue {
            row,
            column: column.map(|c| INPUT_COLUMNS[c].to_owned()),
            code: code.to_owned(),
            message: text::message(&message),
        });
    }

    fn into_rejection(self) -> CsvRejection {
        CsvRejection {
            issues: self.list,
            omitted: self.omitted,
        }
    }
}

/// Parses and validates an input CSV.
///
/// Accepts an optional UTF-8 BOM, CRLF or LF line ends, RFC 4180 quoting, header names in any
/// case with surrounding spaces, and skips lines whose cells are all empty.
///
/// Every URL is also checked against the egress policy as far as it can be without DNS: a
/// host that is an IP literal in a refused range, a refused port or credentials in the URL are
/// rejected here (`blocked_address`, `blocked_port`, `blocked_credentials`), with row and
/// column, instead of failing later as an image.
///
/// # Errors
/// A [`CsvRejection`] listing every problem when anything is invalid; no partial result.
pub fn parse_input_csv(
    bytes: &[u8],
    limits: &CsvLimits,
    egress: NetworkPolicy,
) -> Result<Vec<ParsedRow>, CsvRejection> {
    let mut issues = Issues {
        list: Vec::new(),
        omitted: 0,
        max: limits.max_issues.max(1),
    };
    if bytes.len() > limits.max_bytes {
        issues.push(
            None,
            None,
            "too_large",
            format!(
                "the CSV is {} bytes; the limit is {} bytes — split it into smaller files",
                bytes.len(),
                limits.max_bytes
            ),
        );
        return Err(issues.into_rejection());
    }
    if bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF") {
        issues.push(
            Some(1),
            None,
            "utf16",
            "the file is UTF-16 text (it starts with a UTF-16 byte order mark); export the CSV as UTF-8"
                .to_owned(),
        );
        return Err(issues.into_rejection());
    }
    let text = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    if let Err(e) = std::str::from_utf8(text) {
        let valid = &text[..e.valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        issues.push(
            Some(line),
            None,
            "not_utf8",
            format!(
                "the file is not UTF-8 text (invalid byte at offset {}); export the CSV as UTF-8",
                e.valid_up_to() + bytes.len() - text.len()
            ),
        );
        return Err(issues.into_rejection());
    }

    let builder = {
        let mut b = csv::ReaderBuilder::new();
        b.has_headers(false).flexible(true);
        b
    };
    // Where reading (re)starts: after an unterminated quote, the line after the one that
    // opened it, so one stray quote cannot swallow the rest of the file.
    let mut base = 0usize;
    let mut reader = builder.from_reader(text);
    let mut header_seen = false;
    let mut rows = Vec::new();
    let mut serials: HashMap<String, u64> = HashMap::new();
    let mut record = csv::StringRecord::new();
    let mut data_rows = 0usize;
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map(|p| line_of(text, base as u64 + p.byte()));
                issues.push(
                    line,
                    None,
                    "malformed_csv",
                    format!("the CSV cannot be read past this point: {e}"),
                );
                break;
            }
        }
        let start = base + record.position().map_or(0, |p| p.byte() as usize);
        let end = base + reader.position().byte() as usize;
        if let Some(next) = unterminated_quote(text, start, end, &record) {
            issues.push(
                Some(line_of(text, start as u64)),
                None,
                "unterminated_quote",
                "a quoted cell opens on this row and is never closed; close it with `\"` (a quote inside a quoted cell is written `\"\"`)"
                    .to_owned(),
            );
            base = next;
            reader = builder.from_reader(&text[base..]);
            continue;
        }
        // Lines are counted from the byte offset: the csv reader does not count the blank
        // lines it skips, and people look rows up by the line their editor shows.
        let line = line_of(text, start as u64);
        let cells: Vec<&str> = record.iter().map(str::trim).collect();
        if cells.iter().all(|c| c.is_empty()) {
            continue;
        }
        if !header_seen {
            header_seen = true;
            if !check_header(&cells, line, &mut issues) {
                return Err(issues.into_rejection());
            }
            continue;
        }
        data_rows += 1;
        if data_rows > limits.max_rows {
            issues.push(
                Some(line),
                None,
                "too_many_rows",
                format!(
                    "the CSV has more than {} data rows; split it into smaller files",
                    limits.max_rows
                ),
            );
            break;
        }
        if let Some(row) = check_row(&cells, line, limits, egress, &mut serials, &mut issues) {
            rows.push(row);
        }
    }
    if !header_seen {
        issues.push(
            None,
            None,
            "bad_header",
            format!(
                "the file is empty; the first line must be the header `{}`",
                INPUT_COLUMNS.join(",")
            ),
        );
    } else if data_rows == 0 && issues.list.is_empty() {
        issues.push(
            None,
            None,
            "no_rows",
            "the CSV has a header but no data rows".to_owned(),
        );
    }
    if issues.list.is_empty() && issues.omitted == 0 {
        Ok(rows)
    } else {
        Err(issues.into_rejection())
    }
}

/// For a record read from `text[start..end]` that reached the end of the file with a line
/// break inside a cell and an odd number of `"`: a quote that opened and never closed (RFC 4180
/// §2.7 doubles every quote inside a quoted cell, so a well-formed record has an even count).
/// Returns where reading resumes: the start of the line after the one the record opens on.
fn unterminated_quote(
    text: &[u8],
    start: usize,
    end: usize,
    record: &csv::StringRecord,
) -> Option<usize> {
    let start = start.min(text.len());
    let at_eof = end >= text.len();
    let spans_lines = record.iter().any(|cell| cell.contains('\n'));
    let quotes = text[start..end.min(text.len())]
        .iter()
        .filter(|&&b| b == b'"')
        .count();
    if !(at_eof && spans_lines && quotes % 2 == 1) {
        return None;
    }
    let mut first = start;
    while first < text.len() && matches!(text[first], b'\r' | b'\n') {
        first += 1;
    }
    let newline = text[first..].iter().position(|&b| b == b'\n')?;
    Some(first + newline + 1)
}

/// 1-based line number of the record starting at byte `offset` in `text`. The reader reports
/// the offset just after the previous record's first terminator byte, so line ends (and the
/// blank lines it skipped) are passed over first.
fn line_of(text: &[u8], offset: u64) -> u64 {
    let mut end = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(text.len());
    while end < text.len() && matches!(text[end], b'\r' | b'\n') {
        end += 1;
    }
    text[..end].iter().filter(|&&b| b == b'\n').count() as u64 + 1
}

fn check_header(cells: &[&str], line: u64, issues: &mut Issues) -> bool {
    let matches = cells.len() == INPUT_COLUMNS.len()
        && cells
            .iter()
            .zip(INPUT_COLUMNS)
            .all(|(cell, name)| cell.eq_ignore_ascii_case(name));
    if matches {
        return true;
    }
    let missing: Vec<&str> = INPUT_COLUMNS
        .iter()
        .filter(|name| !cells.iter().any(|c| c.eq_ignore_ascii_case(name)))
        .copied()
        .collect();
    let hint = if missing.is_empty() {
        String::new()
    } else {
        format!(" (missing: {})", missing.join(", "))
    };
    issues.push(
        Some(line),
        None,
        "bad_header",
        format!(
            "the header must be `{}` in this order, found `{}`{hint}",
            INPUT_COLUMNS.join(","),
            cells.join(",")
        ),
    );
    false
}

fn check_row(
    cells: &[&str],
    line: u64,
    limits: &CsvLimits,
    egress: NetworkPolicy,
    serials: &mut HashMap<String, u64>,
    issues: &mut Issues,
) -> Option<ParsedRow> {
    let before = issues.list.len() + issues.omitted;
    // Characters SQS refuses (and that no product data needs) would fail the row's message
    // later; they are reported here, with their cell, before anything is written.
    for (column, cell) in cells.iter().enumerate().take(INPUT_COLUMNS.len()) {
        if let Some((position, c)) = cell.chars().enumerate().find(|(_, c)| is_refused_char(*c)) {
            issues.push(
                Some(line),
                Some(column),
                "invalid_character",
                format!(
                    "{} holds the control character U+{:04X} at character {}; remove it (only tab and printable text are accepted)",
                    INPUT_COLUMNS[column],
                    u32::from(c),
                    position + 1
                ),
            );
        }
    }
    // The serial is checked first so a row with other problems still claims its serial and a
    // later duplicate is reported too.
    let serial = cells.first().copied().unwrap_or_default();
    if serial.is_empty() {
        issues.push(
            Some(line),
            Some(0),
            "missing_serial",
            "S. No. is empty; give every product a serial number".to_owned(),
        );
    } else if serial.len() > MAX_SERIAL_BYTES {
        issues.push(
            Some(line),
            Some(0),
            "serial_too_long",
            format!(
                "S. No. is {} bytes long; the limit is {MAX_SERIAL_BYTES} bytes",
                serial.len()
            ),
        );
    } else if let Some(first) = serials.get(serial) {
        issues.push(
            Some(line),
            Some(0),
            "duplicate_serial",
            format!("S. No. `{serial}` is used on rows {first} and {line}; serials must be unique"),
        );
    } else {
        serials.insert(serial.to_owned(), line);
    }
    if cells.len() < INPUT_COLUMNS.len() {
        issues.push(
            Some(line),
            None,
            "missing_cells",
            format!(
                "the row has {} cell(s); each row needs 3: S. No., Product Name, Input Image Urls",
                cells.len()
            ),
        );
        return None;
    }
    if cells.len() > INPUT_COLUMNS.len() {
        if cells[2..].iter().any(|c| looks_like_url(c)) {
            issues.push(
                Some(line),
                Some(2),
                "unquoted_url_list",
                format!(
                    "the row has {} cells: the URL list must be quoted — put the comma-separated URLs in one cell wrapped in double quotes, e.g. \"https://a.example/1.jpg,https://a.example/2.jpg\" (RFC 4180 §2)",
                    cells.len()
                ),
            );
        } else {
            issues.push(
                Some(line),
                None,
                "too_many_cells",
                format!(
                    "the row has {} cells; each row needs exactly 3: S. No., Product Name, Input Image Urls",
                    cells.len()
                ),
            );
        }
        return None;
    }
    let (product_name, url_cell) = (cells[1], cells[2]);
    if product_name.is_empty() {
        issues.push(
            Some(line),
            Some(1),
            "missing_product_name",
            "Product Name is empty".to_owned(),
        );
    } else if product_name.len() > MAX_PRODUCT_NAME_BYTES {
        issues.push(
            Some(line),
            Some(1),
            "product_name_too_long",
            format!(
                "Product Name is {} bytes long; the limit is {MAX_PRODUCT_NAME_BYTES} bytes",
                product_name.len()
            ),
        );
    }
    let urls: Vec<&str> = url_cell
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    if urls.is_empty() {
        issues.push(
            Some(line),
            Some(2),
            "missing_urls",
            "Input Image Urls is empty; list at least one image URL".to_owned(),
        );
    } else if urls.len() > limits.max_urls_per_row {
        issues.push(
            Some(line),
            Some(2),
            "too_many_urls",
            format!(
                "the row lists {} URLs; the limit is {} per row",
                urls.len(),
                limits.max_urls_per_row
            ),
        );
    }
    for url in &urls {
        if let Err((code, message)) = check_url(url, limits.max_url_length, egress) {
            issues.push(Some(line), Some(2), &code, message);
        }
    }
    if issues.list.len() + issues.omitted > before {
        return None;
    }
    Some(ParsedRow {
        line,
        serial: serial.to_owned(),
        product_name: product_name.to_owned(),
        input_urls: urls.into_iter().map(str::to_owned).collect(),
    })
}

fn looks_like_url(cell: &str) -> bool {
    let lower = cell.trim().to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

fn check_url(raw: &str, max_len: usize, egress: NetworkPolicy) -> Result<(), (String, String)> {
    if raw.len() > max_len {
        return Err((
            "url_too_long".to_owned(),
            format!(
                "a URL is {} bytes long; the limit is {max_len} bytes",
                raw.len()
            ),
        ));
    }
    let parsed = url::Url::parse(raw).map_err(|e| {
        (
            "invalid_url".to_owned(),
            format!("`{raw}` is not an absolute URL: {e}"),
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err((
            "unsupported_scheme".to_owned(),
            format!(
                "`{raw}` uses `{}:`; only http and https URLs can be fetched",
                parsed.scheme()
            ),
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(("invalid_url".to_owned(), format!("`{raw}` has no host")));
    }
    crate::fetch::check_url(&parsed, egress)
        .map_err(|e| (e.code(), format!("`{raw}`: {}", e.message)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<ParsedRow>, CsvRejection> {
        parse_input_csv(
            text.as_bytes(),
            &CsvLimits::default(),
            NetworkPolicy::default(),
        )
    }

    fn codes(rejection: &CsvRejection) -> Vec<(Option<u64>, &str)> {
        rejection
            .issues
            .iter()
            .map(|i| (i.row, i.code.as_str()))
            .collect()
    }

    /// The sample from the original assignment: `1.` serials, quoted URL lists with spaces.
    const SAMPLE: &str = "S. No.,Product Name,Input Image Urls\n\
        1.,SKU1,\"https://www.public-image-url1.jpg, https://www.public-image-url2.jpg, https://www.public-image-url3.jpg\"\n\
        2.,SKU2,\"https://www.public-image-url1.jpg, https://www.public-image-url2.jpg, https://www.public-image-url3.jpg\"\n";

    #[test]
    fn assignment_sample_parses_with_text_serials_and_ordered_urls() {
        let rows = parse(SAMPLE).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].serial, "1.");
        assert_eq!(rows[1].product_name, "SKU2");
        assert_eq!(
            rows[0].input_urls,
            vec![
                "https://www.public-image-url1.jpg",
                "https://www.public-image-url2.jpg",
                "https://www.public-image-url3.jpg"
            ]
        );
        assert_eq!(rows[1].line, 3);
    }

    #[test]
    fn bom_crlf_header_case_and_blank_lines_are_accepted() {
        let text = "\u{feff} s. no. ,PRODUCT NAME,input image urls\r\n\r\n1,Mug,https://x.test/a.jpg\r\n,,\r\n2,Cup,\"https://x.test/b.jpg,https://x.test/c.jpg\"\r\n";
        let rows = parse(text).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].input_urls.len(), 2);
        assert_eq!(rows[1].line, 5);
    }

    #[test]
    fn unquoted_url_list_is_reported_with_how_to_fix_it() {
        let text = "S. No.,Product Name,Input Image Urls\n1,Mug,https://x.test/a.jpg,https://x.test/b.jpg\n";
        let err = parse(text).unwrap_err();
        assert_eq!(codes(&err), vec![(Some(2), "unquoted_url_list")]);
        assert!(err.issues[0].message.contains("must be quoted"));
        assert_eq!(err.issues[0].column.as_deref(), Some("Input Image Urls"));
    }

    #[test]
    fn missing_column_in_header_is_named() {
        let err = parse("S. No.,Input Image Urls\n1,https://x.test/a.jpg\n").unwrap_err();
        assert_eq!(codes(&err), vec![(Some(1), "bad_header")]);
        assert!(err.issues[0].message.contains("missing: Product Name"));
    }

    #[test]
    fn duplicate_serials_name_both_rows() {
        let text = "S. No.,Product Name,Input Image Urls\n1.,A,https://x.test/a.jpg\n2.,B,https://x.test/b.jpg\n1.,C,https://x.test/c.jpg\n";
        let err = parse(text).unwrap_err();
        assert_eq!(codes(&err), vec![(Some(4), "duplicate_serial")]);
        assert!(err.issues[0].message.contains("rows 2 and 4"));
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let text = "S. No.,Product Name,Input Image Urls\n\
            ,A,https://x.test/a.jpg\n\
            2,,ftp://x.test/b.jpg\n\
            3,C,\n\
            4,D,not a url\n\
            5,E\n";
        let err = parse(text).unwrap_err();
        assert_eq!(
            codes(&err),
            vec![
                (Some(2), "missing_serial"),
                (Some(3), "missing_product_name"),
                (Some(3), "unsupported_scheme"),
                (Some(4), "missing_urls"),
                (Some(5), "invalid_url"),
                (Some(6), "missing_cells"),
            ]
        );
    }

    #[test]
    fn limits_on_rows_urls_and_url_length_apply() {
        let limits = CsvLimits {
            max_rows: 1,
            max_urls_per_row: 2,
            max_url_length: 30,
            ..CsvLimits::default()
        };
        let text = "S. No.,Product Name,Input Image Urls\n1,A,\"https://x.test/a.jpg,https://x.test/b.jpg,https://x.test/c.jpg\"\n2,B,https://x.test/a-very-long-path-name.jpg\n";
        let err = parse_input_csv(text.as_bytes(), &limits, NetworkPolicy::default()).unwrap_err();
        assert_eq!(
            codes(&err),
            vec![(Some(2), "too_many_urls"), (Some(3), "too_many_rows")]
        );
        let limits = CsvLimits {
            max_url_length: 20,
            ..CsvLimits::default()
        };
        let err = parse_input_csv(text.as_bytes(), &limits, NetworkPolicy::default()).unwrap_err();
        assert!(err.issues.iter().any(|i| i.code == "url_too_long"));
    }

    #[test]
    fn urls_the_egress_policy_refuses_are_rejected_at_submission_with_row_and_column() {
        let text = "S. No.,Product Name,Input Image Urls\n\
                    1,Metadata,http://169.254.169.254/latest/meta-data/\n\
                    2,Benchmarking,\"https://shop.example/a.jpg, http://[2002:a9fe:a9fe::1]/b.jpg\"\n\
                    3,Port,http://shop.example:6379/c.jpg\n\
                    4,Credentials,https://user:pw@shop.example/d.jpg\n\
                    5,Fine,https://shop.example/e.jpg\n";
        let err = parse(text).unwrap_err();
        assert_eq!(
            codes(&err),
            vec![
                (Some(2), "blocked_address"),
                (Some(3), "blocked_address"),
                (Some(4), "blocked_port"),
                (Some(5), "blocked_credentials"),
            ]
        );
        assert!(
            err.issues
                .iter()
                .all(|i| i.column.as_deref() == Some("Input Image Urls"))
        );
        assert!(
            err.issues[0].message.contains("169.254.0.0/16"),
            "{}",
            err.issues[0].message
        );
        let local = parse_input_csv(
            b"S. No.,Product Name,Input Image Urls\n1,Local,http://127.0.0.1:8080/a.jpg\n",
            &CsvLimits::default(),
            NetworkPolicy::local(),
        )
        .unwrap();
        assert_eq!(local[0].input_urls, vec!["http://127.0.0.1:8080/a.jpg"]);
    }

    #[test]
    fn a_utf16_file_gets_its_own_error() {
        let utf16le: Vec<u8> = "\u{FEFF}S. No.,Product Name,Input Image Urls\n"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let utf16be: Vec<u8> = "\u{FEFF}S. No.\n"
            .encode_utf16()
            .flat_map(u16::to_be_bytes)
            .collect();
        for bytes in [utf16le, utf16be] {
            let err = parse_input_csv(&bytes, &CsvLimits::default(), NetworkPolicy::default())
                .unwrap_err();
            assert_eq!(codes(&err), vec![(Some(1), "utf16")]);
            assert!(err.issues[0].message.contains("UTF-8"));
        }
    }

    #[test]
    fn an_unterminated_quote_is_reported_where_it_opens_and_the_rows_after_it_are_still_checked() {
        let text = "S. No.,Product Name,Input Image Urls\n\
                    1,Good,https://shop.example/a.jpg\n\
                    2,\"Open quote,https://shop.example/b.jpg\n\
                    3,Good,https://shop.example/c.jpg\n\
                    4,Bad,ftp://shop.example/d.jpg\n\
                    5,Good,https://shop.example/e.jpg\n";
        let err = parse(text).unwrap_err();
        assert_eq!(
            codes(&err),
            vec![
                (Some(3), "unterminated_quote"),
                (Some(5), "unsupported_scheme")
            ]
        );
        // The same with CRLF line ends and the open quote on the last row.
        let text = "S. No.,Product Name,Input Image Urls\r\n1,Good,https://shop.example/a.jpg\r\n2,Bad,\"https://shop.example/b.jpg\r\n";
        assert_eq!(
            codes(&parse(text).unwrap_err()),
            vec![(Some(3), "unterminated_quote")]
        );
    }

    #[test]
    fn non_utf8_header_only_and_oversized_uploads_are_rejected() {
        let err = parse_input_csv(
            b"S. No.,Product Name,Input Image Urls\n1,\xff\xfe,x\n",
            &CsvLimits::default(),
            NetworkPolicy::default(),
        )
        .unwrap_err();
        assert_eq!(codes(&err), vec![(Some(2), "not_utf8")]);
        let err = parse("S. No.,Product Name,Input Image Urls\n").unwrap_err();
        assert_eq!(codes(&err), vec![(None, "no_rows")]);
        let limits = CsvLimits {
            max_bytes: 10,
            ..CsvLimits::default()
        };
        let err =
            parse_input_csv(SAMPLE.as_bytes(), &limits, NetworkPolicy::default()).unwrap_err();
        assert_eq!(codes(&err), vec![(None, "too_large")]);
    }

    #[test]
    fn issue_list_is_capped_and_the_rest_counted() {
        let mut text = String::from("S. No.,Product Name,Input Image Urls\n");
        for i in 0..20 {
            text.push_str(&format!("{i},P,nope\n"));
        }
        let limits = CsvLimits {
            max_issues: 5,
            ..CsvLimits::default()
        };
        let err = parse_input_csv(text.as_bytes(), &limits, NetworkPolicy::default()).unwrap_err();
        assert_eq!((err.issues.len(), err.omitted), (5, 15));
    }

    #[test]
    fn long_serials_and_names_are_reported_with_row_and_column() {
        let text = format!(
            "S. No.,Product Name,Input Image Urls\n{},Chair,https://a.example/1.jpg\n2,{},https://a.example/2.jpg\n",
            "7".repeat(MAX_SERIAL_BYTES + 1),
            "n".repeat(MAX_PRODUCT_NAME_BYTES + 1)
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(
            codes(&err),
            vec![
                (Some(2), "serial_too_long"),
                (Some(3), "product_name_too_long")
            ]
        );
        assert_eq!(err.issues[0].column.as_deref(), Some("S. No."));
        assert_eq!(err.issues[1].column.as_deref(), Some("Product Name"));
    }

    #[test]
    fn characters_sqs_refuses_are_reported_with_their_cell() {
        let text = "S. No.,Product Name,Input Image Urls\n1,Chair\u{FFFE},https://a.example/1.jpg\n2\u{1},Table,https://a.example/2.jpg\n3,\"Lamp\u{0}\",https://a.example/3.jpg\n4,Tab\there,https://a.example/4.jpg\n";
        let err = parse(text).unwrap_err();
        assert_eq!(
            codes(&err),
            vec![
                (Some(2), "invalid_character"),
                (Some(3), "invalid_character"),
                (Some(4), "invalid_character")
            ]
        );
        assert_eq!(err.issues[0].column.as_deref(), Some("Product Name"));
        assert!(
            err.issues[0].message.contains("U+FFFE"),
            "{}",
            err.issues[0].message
        );
        assert_eq!(err.issues[1].column.as_deref(), Some("S. No."));
    }

    #[test]
    fn a_huge_cell_never_makes_a_huge_message() {
        // A 500 KB header cell is quoted back in the header error; the message stays bounded
        // (it is stored with a FAILED request and returned in problem details).
        let text = format!(
            "S. No.,Product Name,{}\n1,Chair,https://a.example/1.jpg\n",
            "x".repeat(500_000)
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(codes(&err), vec![(Some(1), "bad_header")]);
        assert!(
            err.issues
                .iter()
                .all(|i| i.message.len() <= text::MAX_MESSAGE_BYTES)
        );
    }
}
