//! The input CSV contract (DESIGN §3): header `S. No.,Product Name,Input Image Urls`, one
//! product per row, the image URLs comma-separated inside one quoted cell (RFC 4180 §2).
//!
//! [`parse_input_csv`] validates the whole upload and returns every problem at once, each with
//! the row (the 1-based line number a text editor or spreadsheet shows), the column, a stable
//! code and a message a person can act on. Nothing is accepted unless everything is valid.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::text::{self, MAX_PRODUCT_NAME_BYTES, MAX_SERIAL_BYTES, is_refused_char};
use crate::egress::NetworkPolicy;

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CsvIssue {
    /// 1-based line of the problem; absent for problems with the file as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<u64>,
    /// Column name, when the problem is in one cell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// Stable code: `too_large`, `utf16`, `not_utf8`, `unterminated_quote`, `row_too_long`, `bad_header`, `no_rows`,
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

#[derive(Debug)]
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

/// Parses and validates an input CSV held in memory (`POST /uploads`): [`CsvScanner`] over
/// `bytes`, collecting the rows.
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
    if bytes.len() > limits.max_bytes {
        return Err(too_large(Some(bytes.len() as u64), limits.max_bytes));
    }
    let mut scanner = CsvScanner::new(limits, egress);
    let mut rows = Vec::new();
    scanner.feed(bytes, &mut |row, _| rows.push(row));
    scanner.finish(&mut |row, _| rows.push(row))?;
    Ok(rows)
}

/// The rejection of an upload larger than `limit` bytes (`size` when known).
#[must_use]
pub fn too_large(size: Option<u64>, limit: usize) -> CsvRejection {
    let size = size.map_or_else(
        || format!("larger than {limit} bytes"),
        |size| format!("{size} bytes"),
    );
    CsvRejection {
        issues: vec![CsvIssue {
            row: None,
            column: None,
            code: "too_large".to_owned(),
            message: format!(
                "the CSV is {size}; the limit is {limit} bytes — split it into smaller files"
            ),
        }],
        omitted: 0,
    }
}

/// Where a valid row sits in the file: the bytes of its record (with the blank lines and the
/// line break before it) and the line `start` is on. Reading `start..end` again with
/// [`CsvScanner::for_span`] gives the same rows with the same lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowSpan {
    /// Offset of the record's first byte in the file, in bytes.
    pub start: u64,
    /// Offset just past the record, in bytes.
    pub end: u64,
    /// 1-based line `start` is on.
    pub start_line: u64,
}

/// What a successful scan counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScanSummary {
    /// Data rows (all valid).
    pub rows: u64,
    /// Image URLs over every row.
    pub images: u64,
    /// Bytes read.
    pub bytes: u64,
}

/// Duplicate-serial detection in bounded memory: 128 bits of each serial (two SipHash-1-3
/// digests with distinct prefixes; a collision among a million serials has a probability
/// below 10⁻²⁶) and the line it was first seen on — 24 bytes per row, so a 1,000,000-row
/// upload holds about 50 MB here whatever the serials' length.
#[derive(Debug, Default)]
struct SerialIndex(HashMap<[u64; 2], u32>);

impl SerialIndex {
    fn key(serial: &str) -> [u64; 2] {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let digest = |prefix: u8| {
            let mut hasher = DefaultHasher::new();
            prefix.hash(&mut hasher);
            serial.hash(&mut hasher);
            hasher.finish()
        };
        [digest(0), digest(1)]
    }

    /// The line `serial` was first seen on, or `None` after recording it on `line`.
    fn first_seen(&mut self, serial: &str, line: u64) -> Option<u64> {
        match self.0.entry(Self::key(serial)) {
            std::collections::hash_map::Entry::Occupied(e) => Some(u64::from(*e.get())),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(u32::try_from(line).unwrap_or(u32::MAX));
                None
            }
        }
    }
}

/// The longest record (one row, its quoted line breaks included) read before it is reported
/// as too long: generous for the configured limits, at least 1 MiB.
fn record_limit(limits: &CsvLimits) -> usize {
    let row = 4096 + limits.max_urls_per_row * (limits.max_url_length + 16);
    (2 * row).max(1 << 20)
}

/// A validating CSV reader fed in pieces, so an upload of any size is checked in one pass in
/// bounded memory (the current record, at most twice the longest valid row and at least 1 MiB,
/// plus 24 bytes per row for duplicate serials).
///
/// Records are split by `csv-core` (RFC 4180 with the `csv` crate's leniencies), lines are
/// counted from the bytes so every issue names the line an editor shows. Valid rows are handed
/// to the caller with their [`RowSpan`]; [`CsvScanner::finish`] says whether the whole file
/// was valid. A caller that writes nothing until `finish` succeeds never accepts a file half
/// way.
#[derive(Debug)]
pub struct CsvScanner {
    limits: CsvLimits,
    egress: NetworkPolicy,
    reader: csv_core::Reader,
    /// `true` until the first bytes are looked at (byte order marks).
    at_start: bool,
    /// The first bytes, held until a byte order mark can be told apart.
    head: Vec<u8>,
    raw: Vec<u8>,
    raw_start: u64,
    raw_line: u64,
    fields: Vec<u8>,
    fields_len: usize,
    ends: Vec<usize>,
    ends_len: usize,
    /// Skipping the rest of an over-long line.
    skipping_line: bool,
    header_seen: bool,
    data_rows: u64,
    images: u64,
    /// `None` when reading a span of a checked file: serials were checked with the whole.
    serials: Option<SerialIndex>,
    issues: Issues,
    fed: u64,
    stopped: bool,
    record_limit: usize,
}

impl CsvScanner {
    /// A scanner for a whole file (header first).
    #[must_use]
    pub fn new(limits: &CsvLimits, egress: NetworkPolicy) -> Self {
        Self {
            limits: *limits,
            egress,
            reader: csv_core::Reader::new(),
            at_start: true,
            head: Vec::new(),
            raw: Vec::new(),
            raw_start: 0,
            raw_line: 1,
            fields: vec![0; 4096],
            fields_len: 0,
            ends: vec![0; 8],
            ends_len: 0,
            skipping_line: false,
            header_seen: false,
            data_rows: 0,
            images: 0,
            serials: Some(SerialIndex::default()),
            issues: Issues {
                list: Vec::new(),
                omitted: 0,
                max: limits.max_issues.max(1),
            },
            fed: 0,
            stopped: false,
            record_limit: record_limit(limits),
        }
    }

    /// A scanner for the bytes `start..` of a file this scanner's settings already found
    /// valid: no header, no byte order mark, lines counted from `start_line`.
    #[must_use]
    pub fn for_span(
        limits: &CsvLimits,
        egress: NetworkPolicy,
        start: u64,
        start_line: u64,
    ) -> Self {
        let mut scanner = Self::new(limits, egress);
        scanner.at_start = false;
        scanner.header_seen = true;
        scanner.serials = None;
        scanner.raw_start = start;
        scanner.raw_line = start_line;
        scanner
    }

    /// Reads the next piece of the file; `on_row` gets each valid row as it completes.
    pub fn feed(&mut self, bytes: &[u8], on_row: &mut dyn FnMut(ParsedRow, RowSpan)) {
        if self.stopped {
            return;
        }
        self.fed += bytes.len() as u64;
        if self.fed > self.limits.max_bytes as u64 {
            self.stop_with(too_large(None, self.limits.max_bytes));
            return;
        }
        if self.at_start {
            self.head.extend_from_slice(bytes);
            if self.head.len() < UTF8_BOM.len() {
                return;
            }
            let head = std::mem::take(&mut self.head);
            self.begin(&head, on_row);
            return;
        }
        self.process(bytes, on_row);
    }

    /// The first bytes: byte order marks.
    fn begin(&mut self, head: &[u8], on_row: &mut dyn FnMut(ParsedRow, RowSpan)) {
        self.at_start = false;
        if head.starts_with(b"\xFF\xFE") || head.starts_with(b"\xFE\xFF") {
            let mut issues = Issues {
                list: Vec::new(),
                omitted: 0,
                max: 1,
            };
            issues.push(
                Some(1),
                None,
                "utf16",
                "the file is UTF-16 text (it starts with a UTF-16 byte order mark); export the CSV as UTF-8"
                    .to_owned(),
            );
            self.stop_with(issues.into_rejection());
            return;
        }
        let text = match head.strip_prefix(UTF8_BOM) {
            Some(rest) => {
                self.raw_start = UTF8_BOM.len() as u64;
                rest
            }
            None => head,
        };
        self.process(text, on_row);
    }

    /// Replaces every issue with `rejection`'s and reads no further.
    fn stop_with(&mut self, rejection: CsvRejection) {
        self.issues.list = rejection.issues;
        self.issues.omitted = rejection.omitted;
        self.stopped = true;
    }

    fn process(&mut self, input: &[u8], on_row: &mut dyn FnMut(ParsedRow, RowSpan)) {
        let mut owned: Option<Vec<u8>> = None;
        let mut pos = 0;
        loop {
            let data: &[u8] = owned.as_deref().unwrap_or(input);
            if pos >= data.len() || self.stopped {
                return;
            }
            if self.skipping_line {
                match data[pos..].iter().position(|&b| b == b'\n') {
                    Some(newline) => {
                        self.raw_start += newline as u64 + 1;
                        self.raw_line += 1;
                        pos += newline + 1;
                        self.skipping_line = false;
                        continue;
                    }
                    None => {
                        self.raw_start += (data.len() - pos) as u64;
                        return;
                    }
                }
            }
            let (result, nin, nout, nend) = self.reader.read_record(
                &data[pos..],
                &mut self.fields[self.fields_len..],
                &mut self.ends[self.ends_len..],
            );
            self.raw.extend_from_slice(&data[pos..pos + nin]);
            pos += nin;
            self.fields_len += nout;
            self.ends_len += nend;
            match result {
                csv_core::ReadRecordResult::OutputFull
                | csv_core::ReadRecordResult::OutputEndsFull => self.grow(result),
                csv_core::ReadRecordResult::Record => {
                    self.record(false, on_row);
                }
                csv_core::ReadRecordResult::InputEmpty | csv_core::ReadRecordResult::End => {}
            }
            if self.raw.len() > self.record_limit {
                let rest = self.overflow();
                if let Some(mut rest) = rest {
                    rest.extend_from_slice(&data[pos..]);
                    owned = Some(rest);
                    pos = 0;
                }
            }
        }
    }

    /// Doubles the field buffer (`OutputFull`) or the field-end buffer (`OutputEndsFull`).
    fn grow(&mut self, full: csv_core::ReadRecordResult) {
        if full == csv_core::ReadRecordResult::OutputFull {
            let len = self.fields.len();
            self.fields.resize(len * 2, 0);
        } else {
            let len = self.ends.len();
            self.ends.resize(len * 2, 0);
        }
    }

    /// The line the current record starts on: line breaks (blank lines) before its first
    /// byte are passed over.
    fn record_line(&self) -> u64 {
        let lead = self
            .raw
            .iter()
            .take_while(|&&b| matches!(b, b'\r' | b'\n'))
            .filter(|&&b| b == b'\n')
            .count();
        self.raw_line + lead as u64
    }

    /// Starts the next record after the current one's bytes.
    fn advance(&mut self) {
        self.raw_start += self.raw.len() as u64;
        self.raw_line += self.raw.iter().filter(|&&b| b == b'\n').count() as u64;
        self.raw.clear();
        self.fields_len = 0;
        self.ends_len = 0;
    }

    /// The bytes after the first line of the current record (where reading resumes after a
    /// record that cannot be read), making them the next input; `None` when the record has
    /// no complete first line (the rest of that line is skipped).
    fn resume_after_first_line(&mut self) -> Option<Vec<u8>> {
        let lead = self
            .raw
            .iter()
            .take_while(|&&b| matches!(b, b'\r' | b'\n'))
            .count();
        self.reader.reset();
        self.fields_len = 0;
        self.ends_len = 0;
        let line = self.record_line();
        let raw = std::mem::take(&mut self.raw);
        match raw[lead..].iter().position(|&b| b == b'\n') {
            Some(newline) => {
                let cut = lead + newline + 1;
                self.raw_start += cut as u64;
                self.raw_line = line + 1;
                Some(raw[cut..].to_vec())
            }
            None => {
                self.raw_start += raw.len() as u64;
                self.raw_line = line;
                self.skipping_line = true;
                None
            }
        }
    }

    /// The current record passed [`record_limit`] without ending: an unterminated quote (odd
    /// quote count) or an absurdly long line. Reported where it opens; reading resumes on the
    /// next line.
    fn overflow(&mut self) -> Option<Vec<u8>> {
        let line = self.record_line();
        let quotes = self.raw.iter().filter(|&&b| b == b'"').count();
        if quotes % 2 == 1 {
            self.unterminated(line);
        } else {
            self.issues.push(
                Some(line),
                None,
                "row_too_long",
                format!(
                    "the row is longer than {} bytes; a row holds a serial, a name and at most {} URLs",
                    self.record_limit, self.limits.max_urls_per_row
                ),
            );
        }
        self.resume_after_first_line()
    }

    fn unterminated(&mut self, line: u64) {
        self.issues.push(
            Some(line),
            None,
            "unterminated_quote",
            "a quoted cell opens on this row and is never closed; close it with `\"` (a quote inside a quoted cell is written `\"\"`)"
                .to_owned(),
        );
    }

    /// A complete record in `raw`/`fields`/`ends`. `at_eof`: it ended with the input.
    /// Returns `true` for an unterminated quote (the record is left in `raw`).
    fn record(&mut self, at_eof: bool, on_row: &mut dyn FnMut(ParsedRow, RowSpan)) -> bool {
        let line = self.record_line();
        if let Err(e) = std::str::from_utf8(&self.raw) {
            let before = &self.raw[..e.valid_up_to()];
            let line = self.raw_line + before.iter().filter(|&&b| b == b'\n').count() as u64;
            let offset = self.raw_start + e.valid_up_to() as u64;
            let mut issues = Issues {
                list: Vec::new(),
                omitted: 0,
                max: 1,
            };
            issues.push(
                Some(line),
                None,
                "not_utf8",
                format!(
                    "the file is not UTF-8 text (invalid byte at offset {offset}); export the CSV as UTF-8"
                ),
            );
            self.stop_with(issues.into_rejection());
            return false;
        }
        let mut cells: Vec<&str> = Vec::with_capacity(self.ends_len);
        let mut from = 0;
        for &end in &self.ends[..self.ends_len] {
            // The fields of valid UTF-8 input are UTF-8: only ASCII quotes are removed.
            cells.push(std::str::from_utf8(&self.fields[from..end]).map_or("", str::trim));
            from = end;
        }
        // RFC 4180 §2.7 doubles every quote inside a quoted cell, so a record that reached the
        // end of the input with a line break in a cell and an odd number of quotes opened a
        // quote it never closed.
        if at_eof
            && self.fields[..self.fields_len].contains(&b'\n')
            && self.raw.iter().filter(|&&b| b == b'"').count() % 2 == 1
        {
            self.unterminated(line);
            return true;
        }
        let span = RowSpan {
            start: self.raw_start,
            end: self.raw_start + self.raw.len() as u64,
            start_line: self.raw_line,
        };
        let outcome = if cells.iter().all(|c| c.is_empty()) {
            None
        } else if !self.header_seen {
            self.header_seen = true;
            if !check_header(&cells, line, &mut self.issues) {
                self.stopped = true;
            }
            None
        } else {
            self.data_rows += 1;
            if self.data_rows > self.limits.max_rows as u64 {
                self.issues.push(
                    Some(line),
                    None,
                    "too_many_rows",
                    format!(
                        "the CSV has more than {} data rows; split it into smaller files",
                        self.limits.max_rows
                    ),
                );
                self.stopped = true;
                None
            } else {
                check_row(
                    &cells,
                    line,
                    &self.limits,
                    self.egress,
                    self.serials.as_mut(),
                    &mut self.issues,
                )
            }
        };
        drop(cells);
        self.advance();
        if let Some(row) = outcome {
            self.images += row.input_urls.len() as u64;
            on_row(row, span);
        }
        false
    }

    /// Ends the input: reads the last record, then says whether the whole file was valid.
    ///
    /// # Errors
    /// A [`CsvRejection`] listing every problem (up to [`CsvLimits::max_issues`]).
    pub fn finish(
        mut self,
        on_row: &mut dyn FnMut(ParsedRow, RowSpan),
    ) -> Result<ScanSummary, CsvRejection> {
        if self.at_start && !self.stopped {
            let head = std::mem::take(&mut self.head);
            self.begin(&head, on_row);
        }
        while !self.stopped {
            let (result, _, nout, nend) = self.reader.read_record(
                &[],
                &mut self.fields[self.fields_len..],
                &mut self.ends[self.ends_len..],
            );
            self.fields_len += nout;
            self.ends_len += nend;
            match result {
                csv_core::ReadRecordResult::OutputFull
                | csv_core::ReadRecordResult::OutputEndsFull => self.grow(result),
                csv_core::ReadRecordResult::Record => {
                    // An unterminated quote: read on from the line after the one it opened on.
                    let unterminated = self.record(true, on_row);
                    if unterminated && let Some(rest) = self.resume_after_first_line() {
                        self.process(&rest, on_row);
                    } else if unterminated {
                        self.raw.clear();
                    }
                }
                csv_core::ReadRecordResult::InputEmpty | csv_core::ReadRecordResult::End => break,
            }
        }
        if self.stopped {
            return Err(self.issues.into_rejection());
        }
        if !self.header_seen {
            self.issues.push(
                None,
                None,
                "bad_header",
                format!(
                    "the file is empty; the first line must be the header `{}`",
                    INPUT_COLUMNS.join(",")
                ),
            );
        } else if self.data_rows == 0 && self.issues.list.is_empty() && self.serials.is_some() {
            self.issues.push(
                None,
                None,
                "no_rows",
                "the CSV has a header but no data rows".to_owned(),
            );
        }
        if self.issues.list.is_empty() && self.issues.omitted == 0 {
            Ok(ScanSummary {
                rows: self.data_rows,
                images: self.images,
                bytes: self.fed,
            })
        } else {
            Err(self.issues.into_rejection())
        }
    }
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
    serials: Option<&mut SerialIndex>,
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
    } else if let Some(first) = serials.and_then(|s| s.first_seen(serial, line)) {
        issues.push(
            Some(line),
            Some(0),
            "duplicate_serial",
            format!("S. No. `{serial}` is used on rows {first} and {line}; serials must be unique"),
        );
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
    crate::egress::check_url(&parsed, egress)
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

    fn scan_in_pieces(
        bytes: &[u8],
        piece: usize,
        limits: &CsvLimits,
    ) -> (Result<ScanSummary, CsvRejection>, Vec<(ParsedRow, RowSpan)>) {
        let mut scanner = CsvScanner::new(limits, NetworkPolicy::default());
        let mut rows = Vec::new();
        for chunk in bytes.chunks(piece) {
            scanner.feed(chunk, &mut |row, span| rows.push((row, span)));
        }
        let summary = scanner.finish(&mut |row, span| rows.push((row, span)));
        (summary, rows)
    }

    #[test]
    fn a_file_fed_in_pieces_of_any_size_reads_as_the_whole() {
        let texts = [
            SAMPLE.to_owned(),
            "\u{feff} s. no. ,PRODUCT NAME,input image urls\r\n\r\n1,Mug,https://x.test/a.jpg\r\n,,\r\n2,Cup,\"https://x.test/b.jpg,https://x.test/c.jpg\"\r\n".to_owned(),
            "S. No.,Product Name,Input Image Urls\n1,Good,https://shop.example/a.jpg\n2,\"Open quote,https://shop.example/b.jpg\n3,Good,https://shop.example/c.jpg\n4,Bad,ftp://shop.example/d.jpg\n".to_owned(),
            "S. No.,Product Name,Input Image Urls\n1,\"Multi\nline\",https://x.test/a.jpg\n1,Dup,https://x.test/b.jpg\n".to_owned(),
            "S. No.,Product Name,Input Image Urls\n1,Shoe 12\" wide,https://x.test/a.jpg\n2,B,https://x.test/b.jpg".to_owned(),
        ];
        for text in &texts {
            let whole = parse(text);
            for piece in [1, 2, 3, 5, 64, 4096] {
                let (summary, rows) = scan_in_pieces(text.as_bytes(), piece, &CsvLimits::default());
                match &whole {
                    Ok(expected) => {
                        let got: Vec<ParsedRow> = rows.into_iter().map(|(r, _)| r).collect();
                        assert_eq!(&got, expected, "piece {piece}: {text:?}");
                        assert_eq!(summary.unwrap().rows, expected.len() as u64);
                    }
                    Err(expected) => assert_eq!(&summary.unwrap_err(), expected, "piece {piece}"),
                }
            }
        }
    }

    #[test]
    fn a_span_read_again_gives_the_same_rows_on_the_same_lines() {
        let mut text = String::from("\u{feff}S. No.,Product Name,Input Image Urls\r\n");
        for i in 0..50 {
            if i % 7 == 0 {
                text.push_str("\r\n,,\r\n");
            }
            text.push_str(&format!(
                "{i},\"Name, {i}\",\"https://x.test/{i}a.jpg, https://x.test/{i}b.jpg\"\r\n"
            ));
        }
        let (summary, rows) = scan_in_pieces(text.as_bytes(), 13, &CsvLimits::default());
        assert_eq!(summary.unwrap().images, 100);
        for window in rows.chunks(9) {
            let (start, end) = (window[0].1.start, window.last().unwrap().1.end);
            let mut again = Vec::new();
            let mut scanner = CsvScanner::for_span(
                &CsvLimits::default(),
                NetworkPolicy::default(),
                start,
                window[0].1.start_line,
            );
            scanner.feed(
                &text.as_bytes()[start as usize..end as usize],
                &mut |row, _| again.push(row),
            );
            scanner.finish(&mut |row, _| again.push(row)).unwrap();
            let expected: Vec<ParsedRow> = window.iter().map(|(r, _)| r.clone()).collect();
            assert_eq!(again, expected);
        }
    }

    #[test]
    fn a_quote_left_open_in_a_big_file_costs_one_issue_and_bounded_memory() {
        // A stray quote early in a long file: the record grows until the record limit, is
        // reported where it opened, and every later row is still checked.
        let mut text =
            String::from("S. No.,Product Name,Input Image Urls\n1,\"Open,https://x.test/a.jpg\n");
        let mut i: u64 = 2;
        while text.len() < 3 << 20 {
            text.push_str(&format!("{i},Name {i},https://x.test/{i}.jpg\n"));
            i += 1;
        }
        text.push_str(&format!("{i},Bad,ftp://x.test/{i}.jpg\n"));
        let (summary, _) = scan_in_pieces(
            text.as_bytes(),
            65536,
            &CsvLimits {
                max_bytes: 10 << 20,
                max_rows: 1_000_000,
                ..CsvLimits::default()
            },
        );
        assert_eq!(
            codes(&summary.unwrap_err()),
            vec![
                (Some(2), "unterminated_quote"),
                (Some(i + 1), "unsupported_scheme")
            ]
        );
        // A line of 2 MB with no quote at all.
        let text = format!(
            "S. No.,Product Name,Input Image Urls\n1,{},x\n2,B,ftp://x.test/b.jpg\n",
            "n".repeat(2 << 20)
        );
        let (summary, _) = scan_in_pieces(
            text.as_bytes(),
            65536,
            &CsvLimits {
                max_bytes: 10 << 20,
                ..CsvLimits::default()
            },
        );
        assert_eq!(
            codes(&summary.unwrap_err()),
            vec![(Some(2), "row_too_long"), (Some(3), "unsupported_scheme")]
        );
    }
}
