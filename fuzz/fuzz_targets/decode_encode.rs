//! Any bytes as a downloaded image, through the engine with the deployment's decode limits, in
//! every output format (JPEG quality 50, WebP and AVIF at their defaults, and an `auto:70`
//! search, scaled to 64 pixels so AVIF stays quick): it never panics or aborts, and every
//! success is an image of the asked format within the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pixpress_domain::image_limits::DecodeLimits;
use pixpress_domain::model::{OutputFormat, OutputSpec, Quality};
use pixpress_engine::compress;

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits::default();
    let Some((&choice, data)) = data.split_first() else {
        return;
    };
    let format = OutputFormat::ALL[usize::from(choice) % OutputFormat::ALL.len()];
    let quality = (choice & 0x80 != 0).then_some(Quality::Auto(70));
    let scaled = OutputSpec::with_format(format, quality, Some(64)).unwrap_or_default();
    for spec in [OutputSpec::default(), scaled] {
        if let Ok(out) = compress(data, &spec, &limits) {
            let magic_ok = match spec.format {
                OutputFormat::Jpeg => out.bytes.starts_with(&[0xFF, 0xD8]),
                OutputFormat::Webp => {
                    out.bytes.starts_with(b"RIFF") && out.bytes.get(8..12) == Some(&b"WEBP"[..])
                }
                OutputFormat::Avif => out.bytes.get(4..12) == Some(&b"ftypavif"[..]),
            };
            assert!(magic_ok, "not a {:?}", spec.format);
            assert!(u64::from(out.width) * u64::from(out.height) <= limits.max_pixels);
            assert!(out.score.is_none_or(|s| s <= 100.0));
        }
    }
});
