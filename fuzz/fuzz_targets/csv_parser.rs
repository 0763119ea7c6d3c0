//! Any bytes as an upload: the parser never panics, and what it accepts honours the limits
//! and the contract (three columns' worth of checked text, every URL http(s) with a host).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pixpress_domain::input_csv::{CsvLimits, parse_input_csv};
use pixpress_domain::egress::NetworkPolicy;

fuzz_target!(|data: &[u8]| {
    let limits = CsvLimits::default();
    match parse_input_csv(data, &limits, NetworkPolicy::default()) {
        Ok(rows) => {
            assert!(!rows.is_empty() && rows.len() <= limits.max_rows);
            for row in &rows {
                assert!(row.input_urls.len() <= limits.max_urls_per_row);
                assert!(!row.serial.is_empty());
                for url in &row.input_urls {
                    assert!(url.len() <= limits.max_url_length);
                    let parsed = url::Url::parse(url).expect("accepted URLs parse");
                    assert!(matches!(parsed.scheme(), "http" | "https"));
                    assert!(parsed.host_str().is_some_and(|h| !h.is_empty()));
                }
                for text in [&row.serial, &row.product_name] {
                    assert!(!text.chars().any(pixpress_domain::text::is_refused_char));
                }
            }
        }
        Err(rejection) => {
            assert!(!rejection.issues.is_empty());
            assert!(rejection.issues.len() <= limits.max_issues);
        }
    }
});
