//! WebP through libwebp: lossy encoding (`WebPConfig`, method 4, one thread), decoding of still
//! lossy inputs and of our own output for scoring (as browsers decode it), and metadata
//! stripping for the "never larger" rule (the RIFF container, Google's "WebP Container
//! Specification").

use ::image::metadata::Orientation;

use super::{CompressError, DecodeLimits, Pixels, check_dimensions};

/// The largest side a WebP image can have, in pixels (14-bit dimensions, WebP Container
/// Specification, "Simple File Format (Lossy)").
pub(super) const MAX_SIDE: u32 = 16_383;

/// Encodes 8-bit RGB as lossy WebP at `quality` (0–100, libwebp's scale).
///
/// # Errors
/// [`CompressError::Encode`] when a side is over [`MAX_SIDE`] or libwebp fails.
pub(super) fn encode(
    rgb: &[u8],
    width: u32,
    height: u32,
    quality: u8,
) -> Result<Vec<u8>, CompressError> {
    if rgb.len() != width as usize * height as usize * 3 {
        return Err(CompressError::Encode(
            "pixel buffer size mismatch".to_owned(),
        ));
    }
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(CompressError::Encode(format!(
            "WebP images are at most {MAX_SIDE} pixels a side; this one is {width}×{height} \
             (set max_dimension)"
        )));
    }
    let mut config = ::webp::WebPConfig::new()
        .map_err(|()| CompressError::Encode("libwebp: cannot create a configuration".into()))?;
    config.quality = f32::from(quality.min(100));
    config.method = 4;
    config.thread_level = 0;
    ::webp::Encoder::from_rgb(rgb, width, height)
        .encode_advanced(&config)
        .map(|memory| memory.to_vec())
        .map_err(|e| CompressError::Encode(format!("libwebp: {e:?}")))
}

/// Decodes a WebP we encoded (lossy, opaque), to 8-bit RGB, with libwebp (the decoder browsers
/// use).
///
/// # Errors
/// [`CompressError::Decode`] when the bytes do not decode.
pub(super) fn decode(bytes: &[u8]) -> Result<Vec<u8>, CompressError> {
    ::webp::Decoder::new(bytes)
        .decode()
        .filter(|image| !image.is_alpha())
        .map(|image| image.to_vec())
        .ok_or_else(|| CompressError::Decode("libwebp cannot decode the output".to_owned()))
}

/// A still, lossy, opaque WebP input (see [`is_plain_lossy`], then libwebp's own header parse
/// must report a lossy bitstream) decoded by libwebp: 8-bit RGB, its EXIF orientation and ICC
/// profile. The dimensions are checked against `limits` from the bitstream header before
/// libwebp allocates the pixels; libwebp's buffer is then copied, so the peak is 6 bytes a
/// pixel for a moment.
///
/// `Ok(None)` for every other WebP, which the `image` crate (pure Rust) decodes instead: the
/// libwebp the `webp` crate bundles is 1.3.1, whose lossless decoder — also used for alpha
/// planes — has CVE-2023-4863 (a heap overflow on crafted Huffman tables, fixed in 1.3.2), so it
/// is only ever handed lossy bitstreams. `Ok(None)` too for bytes libwebp refuses (the `image`
/// crate then says why: truncated or damaged).
///
/// # Errors
/// [`CompressError::TooManyPixels`] from the header.
pub(super) fn decode_input(
    input: &[u8],
    limits: &DecodeLimits,
) -> Result<Option<Pixels>, CompressError> {
    let Some(chunks) = chunks(input) else {
        return Ok(None);
    };
    if !is_plain_lossy(&chunks) {
        return Ok(None);
    }
    // Decisive: libwebp's own header parse (the one its decoder runs) must find a lossy
    // bitstream, whatever our chunk walk made of the bytes.
    let Some(features) = ::webp::BitstreamFeatures::new(input) else {
        return Ok(None);
    };
    if !matches!(features.format(), Some(::webp::BitstreamFormat::Lossy))
        || features.has_animation()
        || features.has_alpha()
    {
        return Ok(None);
    }
    check_dimensions(features.width(), features.height(), limits)?;
    let Some(image) = ::webp::Decoder::new(input).decode() else {
        return Ok(None);
    };
    if image.is_alpha() {
        return Ok(None);
    }
    let (mut orientation, mut icc) = (Orientation::NoTransforms, None);
    for (fourcc, payload) in &chunks {
        match fourcc {
            b"ICCP" => icc = Some(payload.to_vec()),
            b"EXIF" => {
                // The chunk holds the TIFF structure; some writers keep JPEG's `Exif\0\0` prefix.
                let tiff = payload.strip_prefix(b"Exif\0\0").unwrap_or(payload);
                orientation = Orientation::from_exif_chunk(tiff).unwrap_or(orientation);
            }
            _ => {}
        }
    }
    Ok(Some(Pixels {
        rgb: image.to_vec(),
        width: image.width(),
        height: image.height(),
        orientation,
        icc,
        cmyk: false,
        scaled: false,
    }))
}

/// `true` for a simple lossy file (one `VP8 ` chunk) or an extended one whose chunks are `VP8X`
/// first, then only `ICCP`, `EXIF`, `XMP ` and exactly one `VP8 `: no lossless bitstream, alpha
/// plane, animation or chunk libwebp might read another way (a simple file whose first chunk is
/// not `VP8 ` is parsed by libwebp as a raw bitstream, lossless ones included).
fn is_plain_lossy(chunks: &[([u8; 4], &[u8])]) -> bool {
    let Some(((first, _), rest)) = chunks.split_first() else {
        return false;
    };
    if rest.is_empty() {
        return first == b"VP8 ";
    }
    first == b"VP8X"
        && rest.iter().filter(|(fourcc, _)| fourcc == b"VP8 ").count() == 1
        && rest
            .iter()
            .all(|(fourcc, _)| matches!(fourcc, b"VP8 " | b"ICCP" | b"EXIF" | b"XMP "))
}

/// VP8X flag bits (WebP Container Specification, "Extended File Format").
const FLAG_ANIMATION: u8 = 0x02;
const FLAG_XMP: u8 = 0x04;
const FLAG_EXIF: u8 = 0x08;
const FLAG_ALPHA: u8 = 0x10;

/// A WebP container's chunks, `(fourcc, payload)`, or `None` when the RIFF structure is broken.
fn chunks(webp: &[u8]) -> Option<Vec<([u8; 4], &[u8])>> {
    if webp.len() < 12 || &webp[..4] != b"RIFF" || &webp[8..12] != b"WEBP" {
        return None;
    }
    let mut out = Vec::new();
    let mut at = 12;
    while at + 8 <= webp.len() {
        let fourcc: [u8; 4] = webp[at..at + 4].try_into().ok()?;
        let size = u32::from_le_bytes(webp[at + 4..at + 8].try_into().ok()?) as usize;
        let end = at.checked_add(8)?.checked_add(size)?;
        let payload = webp.get(at + 8..end)?;
        out.push((fourcc, payload));
        at = end + (size & 1);
    }
    Some(out)
}

/// `true` when the WebP is a still image without alpha, so keeping it shows what our
/// (flattened, first-frame) encoding would.
pub(super) fn is_still_opaque(webp: &[u8]) -> bool {
    let Some(chunks) = chunks(webp) else {
        return false;
    };
    chunks.iter().all(|(fourcc, payload)| match fourcc {
        b"VP8X" => payload
            .first()
            .is_some_and(|flags| flags & (FLAG_ANIMATION | FLAG_ALPHA) == 0),
        b"ALPH" | b"ANIM" | b"ANMF" => false,
        // A lossless bitstream: bit 28 of the header after the signature byte says alpha is used.
        b"VP8L" => payload
            .get(1..5)
            .and_then(|b| b.try_into().ok())
            .is_some_and(|b: [u8; 4]| u32::from_le_bytes(b) & (1 << 28) == 0),
        _ => true,
    })
}

/// The WebP without its `EXIF` and `XMP ` chunks (and their VP8X flags); everything else byte
/// for byte. Lossless. The input unchanged when its structure cannot be read.
pub(super) fn strip_metadata(webp: &[u8]) -> Vec<u8> {
    let Some(chunks) = chunks(webp) else {
        return webp.to_vec();
    };
    let mut body = Vec::with_capacity(webp.len());
    body.extend_from_slice(b"WEBP");
    for (fourcc, payload) in chunks {
        if &fourcc == b"EXIF" || &fourcc == b"XMP " {
            continue;
        }
        body.extend_from_slice(&fourcc);
        body.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(0).to_le_bytes());
        let start = body.len();
        body.extend_from_slice(payload);
        if &fourcc == b"VP8X" && !payload.is_empty() {
            body[start] &= !(FLAG_EXIF | FLAG_XMP);
        }
        if payload.len() % 2 == 1 {
            body.push(0);
        }
    }
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&body);
    out
}
