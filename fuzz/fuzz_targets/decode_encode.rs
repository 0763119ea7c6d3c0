//! Any bytes as a downloaded image, through the engine with the deployment's decode limits and
//! the default output (JPEG quality 50): it never panics or aborts, and every success is a
//! JPEG within the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pixpress_domain::image_limits::DecodeLimits;
use pixpress_domain::model::OutputSpec;
use pixpress_engine::compress;

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits::default();
    for spec in [
        OutputSpec::default(),
        OutputSpec {
            max_dimension: Some(64),
            ..OutputSpec::default()
        },
    ] {
        if let Ok(out) = compress(data, &spec, &limits) {
            assert!(out.bytes.starts_with(&[0xFF, 0xD8]), "not a JPEG");
            assert!(u64::from(out.width) * u64::from(out.height) <= limits.max_pixels);
        }
    }
});
