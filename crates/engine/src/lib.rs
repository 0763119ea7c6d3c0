//! The compression engine: sniff → header check → decode → colour → orient → resize → encode
//! (JPEG, WebP or AVIF) → score.
//!
//! - JPEG decoding and JPEG encoding go through libjpeg-turbo (the `jpeg` module); "quality 50"
//!   means the IJG tables at 50 with 4:2:0 chroma, exactly as Pillow and libjpeg, with optimised
//!   Huffman tables (same pixels, fewer bytes).
//! - WebP output through libwebp (`webp`), AVIF output through rav1e (`avif`), each on the
//!   calling pool thread only.
//! - Every output is scored: SSIMULACRA2 of what a viewer decodes against the pixels that were
//!   encoded (`score`). `quality=auto:<score>` searches, per image and in at most
//!   [`MAX_SEARCH_ENCODES`] encodes, the lowest quality whose score reaches the target.
//! - Still, lossy, opaque WebP decodes with libwebp; PNG, GIF and lossless, alpha-coded or
//!   animated WebP (first frame) with the `image` crate (libwebp 1.3.1's lossless decoder has
//!   CVE-2023-4863); alpha is flattened onto white and 16-bit samples are scaled to 8 bits.
//! - Dimensions are checked from the header against [`DecodeLimits`] before any pixel buffer
//!   exists, for every format; `image::Limits` cap the `image` crate's allocations as well.
//! - EXIF orientation is applied; non-sRGB ICC profiles are converted to sRGB; CMYK is
//!   converted to RGB; outputs carry no metadata.
//! - Never larger, per format: when the encoded image is not smaller than an input in the same
//!   format (and keeping the input changes nothing a viewer sees), the output is the input with
//!   its metadata removed (JPEG: APPn/COM segments; WebP: EXIF/XMP chunks). AVIF inputs are not
//!   decoded, so the rule never applies to AVIF.
//!
//! Pure and CPU-bound: [`Engine`] runs it on a pool of one thread per core.

mod avif;
mod color;
mod jpeg;
mod score;
mod webp;

use std::io::Cursor;
use std::sync::Arc;

use ::image::metadata::Orientation;
use ::image::{
    DynamicImage, ImageDecoder, ImageError as CodecError, ImageFormat, ImageReader, Limits,
    RgbImage,
};

pub use color::cmyk_to_rgb;

pub use pixpress_domain::image_limits::DecodeLimits;
use pixpress_domain::model::{OutputFormat, OutputSpec};
pub use score::{Reference as ScoreReference, SCORE_MAX_PIXELS};

/// A compressed image.
#[derive(Debug, Clone, PartialEq)]
pub struct Compressed {
    /// The stored output, in the spec's format.
    pub bytes: Vec<u8>,
    /// Output width in pixels.
    pub width: u32,
    /// Output height in pixels.
    pub height: u32,
    /// Input format name (`jpeg`, `png`, `webp`, `gif`).
    pub input_format: &'static str,
    /// `true` when re-encoding did not make the image smaller and the output is the input with
    /// its metadata removed.
    pub kept_original: bool,
    /// Encoder quality the output was encoded at (1–100, the format's scale): the spec's, or
    /// the one `auto:<score>` found.
    pub quality: u8,
    /// SSIMULACRA2 of the output against the encoded pixels (100 for a kept input); `None`
    /// above [`SCORE_MAX_PIXELS`] and when the spec turns scoring off.
    pub score: Option<f64>,
}

/// Why an image could not be compressed. Every variant is permanent: the same bytes fail again.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompressError {
    /// The bytes are not an image format we recognise (HTML error pages land here).
    #[error("not an image (the first bytes match no supported format)")]
    NotAnImage,
    /// A recognised image format we do not decode.
    #[error("unsupported image format {0}")]
    UnsupportedFormat(String),
    /// The header declares more pixels or a longer side than the limits allow.
    #[error(
        "image is {width}×{height} pixels; the limit is {max_pixels} pixels and {max_side} per side"
    )]
    TooManyPixels {
        /// Declared width in pixels.
        width: u32,
        /// Declared height in pixels.
        height: u32,
        /// Configured pixel limit.
        max_pixels: u64,
        /// Configured side limit.
        max_side: u32,
    },
    /// The file ends before the image does (a partial download).
    #[error("image data is truncated: {0}")]
    Truncated(String),
    /// The data is damaged.
    #[error("cannot decode image: {0}")]
    Decode(String),
    /// The encoder failed.
    #[error("cannot encode the image: {0}")]
    Encode(String),
    /// A progressive JPEG with more scans than [`DecodeLimits::max_scans`] (a CPU-exhaustion
    /// pattern).
    #[error("the progressive JPEG has more than {0} scans")]
    TooManyScans(u32),
    /// The codec panicked on this image; the engine thread survived and goes on.
    #[error("the image codec failed unexpectedly: {0}")]
    Panicked(String),
    /// The compression pool is gone (the process is shutting down).
    #[error("the compression pool has stopped")]
    Stopped,
}

impl CompressError {
    /// A short message safe to show a client (status API, output CSV, webhook): the
    /// decoder's or encoder's own words stay in the logs ([`std::fmt::Display`] has them).
    #[must_use]
    pub fn client_message(&self) -> String {
        match self {
            Self::Truncated(_) => "the image data is truncated".to_owned(),
            Self::Decode(_) => "the image data is damaged and cannot be decoded".to_owned(),
            Self::Encode(_) => "the image encoder failed on this image".to_owned(),
            Self::Panicked(_) => "the image codec failed unexpectedly".to_owned(),
            other => other.to_string(),
        }
    }

    /// The stable per-image error code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotAnImage => "not_an_image",
            Self::UnsupportedFormat(_) => "unsupported_format",
            Self::TooManyPixels { .. } => "too_many_pixels",
            Self::Truncated(_) => "truncated",
            Self::Decode(_) => "decode_error",
            Self::Encode(_) => "encode_error",
            Self::TooManyScans(_) => "too_many_scans",
            Self::Panicked(_) => "codec_panic",
            Self::Stopped => "engine_stopped",
        }
    }

    /// `true` only when the engine itself could not run the job ([`CompressError::Stopped`]):
    /// every other failure is a property of the bytes and fails the same way again.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Stopped)
    }
}

/// Decoded pixels on their way to the encoder.
#[derive(Debug)]
struct Pixels {
    rgb: Vec<u8>,
    width: u32,
    height: u32,
    orientation: Orientation,
    icc: Option<Vec<u8>>,
    cmyk: bool,
    scaled: bool,
}

/// Recognises the input format from its magic bytes (never from a `Content-Type`).
///
/// # Errors
/// [`CompressError::NotAnImage`] for unknown bytes, [`CompressError::UnsupportedFormat`] for a
/// known image format outside JPEG, PNG, WebP and GIF.
pub fn sniff(bytes: &[u8]) -> Result<ImageFormat, CompressError> {
    let format = ::image::guess_format(bytes).map_err(|_| CompressError::NotAnImage)?;
    match format {
        ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP | ImageFormat::Gif => Ok(format),
        other => Err(CompressError::UnsupportedFormat(
            format!("{other:?}").to_lowercase(),
        )),
    }
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "jpeg",
        ImageFormat::Png => "png",
        ImageFormat::WebP => "webp",
        ImageFormat::Gif => "gif",
        _ => "other",
    }
}

fn check_dimensions(width: u32, height: u32, limits: &DecodeLimits) -> Result<(), CompressError> {
    if width > limits.max_side
        || height > limits.max_side
        || u64::from(width) * u64::from(height) > limits.max_pixels
    {
        return Err(CompressError::TooManyPixels {
            width,
            height,
            max_pixels: limits.max_pixels,
            max_side: limits.max_side,
        });
    }
    Ok(())
}

fn codec_error(e: CodecError) -> CompressError {
    match e {
        CodecError::Unsupported(u) => CompressError::UnsupportedFormat(u.to_string()),
        other => {
            let text = other.to_string();
            let lower = text.to_ascii_lowercase();
            if lower.contains("eof")
                || lower.contains("end of file")
                || lower.contains("truncat")
                || lower.contains("unexpected end")
            {
                CompressError::Truncated(text)
            } else {
                CompressError::Decode(text)
            }
        }
    }
}

/// Checks every frame header of a GIF up to the first image against `limits` before any pixel
/// buffer exists: the logical screen may be small while the first frame declares a huge size,
/// and the decoder allocates frames at their own size.
fn check_gif_frames(input: &[u8], limits: &DecodeLimits) -> Result<(), CompressError> {
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::Indexed);
    let mut decoder = options
        .read_info(Cursor::new(input))
        .map_err(|e| CompressError::Decode(e.to_string()))?;
    check_dimensions(
        u32::from(decoder.width()),
        u32::from(decoder.height()),
        limits,
    )?;
    match decoder.next_frame_info() {
        Ok(Some(frame)) => check_dimensions(
            u32::from(frame.left) + u32::from(frame.width),
            u32::from(frame.top) + u32::from(frame.height),
            limits,
        ),
        Ok(None) => Err(CompressError::Decode("the GIF has no image".to_owned())),
        Err(e) => Err(codec_error(CodecError::Decoding(
            ::image::error::DecodingError::new(ImageFormat::Gif.into(), e),
        ))),
    }
}

/// PNG, WebP, GIF (and JPEGs libjpeg-turbo refuses) through the `image` crate.
fn decode_generic(
    input: &[u8],
    format: ImageFormat,
    limits: &DecodeLimits,
) -> Result<Pixels, CompressError> {
    if format == ImageFormat::Gif {
        check_gif_frames(input, limits)?;
    }
    let mut reader = ImageReader::with_format(Cursor::new(input), format);
    let mut codec_limits = Limits::default();
    codec_limits.max_image_width = Some(limits.max_side);
    codec_limits.max_image_height = Some(limits.max_side);
    // RGBA16 is the widest buffer a decoder allocates: 8 bytes per pixel, plus headroom.
    codec_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(codec_limits);
    let mut decoder = reader.into_decoder().map_err(|e| match e {
        CodecError::Limits(_) => CompressError::TooManyPixels {
            width: 0,
            height: 0,
            max_pixels: limits.max_pixels,
            max_side: limits.max_side,
        },
        other => codec_error(other),
    })?;
    let (width, height) = decoder.dimensions();
    check_dimensions(width, height, limits)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let icc = decoder.icc_profile().ok().flatten();
    let image = DynamicImage::from_decoder(decoder).map_err(codec_error)?;
    let rgb = flatten_onto_white(image);
    Ok(Pixels {
        width: rgb.width(),
        height: rgb.height(),
        rgb: rgb.into_raw(),
        orientation,
        icc,
        cmyk: false,
        scaled: false,
    })
}

/// 8-bit RGB with any alpha composited over white; 16-bit samples are scaled, not clipped.
/// An 8-bit RGBA buffer is flattened in place, so no second full-size buffer is allocated.
fn flatten_onto_white(image: DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.into_rgb8();
    }
    let rgba = image.into_rgba8();
    let (width, height) = rgba.dimensions();
    let mut buffer = rgba.into_raw();
    let pixels = buffer.len() / 4;
    for i in 0..pixels {
        // Writes go to 3·i ≤ 4·i, behind the reads, so the compaction is safe in place.
        let alpha = u32::from(buffer[4 * i + 3]);
        for c in 0..3 {
            let value = u32::from(buffer[4 * i + c]);
            let blended = (value * alpha + 255 * (255 - alpha) + 127) / 255;
            buffer[3 * i + c] = u8::try_from(blended).unwrap_or(u8::MAX);
        }
    }
    buffer.truncate(pixels * 3);
    RgbImage::from_raw(width, height, buffer).unwrap_or_else(|| RgbImage::new(width, height))
}

fn orient(pixels: Pixels) -> Result<Pixels, CompressError> {
    if pixels.orientation == Orientation::NoTransforms {
        return Ok(pixels);
    }
    let buffer = RgbImage::from_raw(pixels.width, pixels.height, pixels.rgb)
        .ok_or_else(|| CompressError::Decode("pixel buffer size mismatch".to_owned()))?;
    let mut image = DynamicImage::ImageRgb8(buffer);
    image.apply_orientation(pixels.orientation);
    let rgb = image.into_rgb8();
    Ok(Pixels {
        width: rgb.width(),
        height: rgb.height(),
        rgb: rgb.into_raw(),
        ..pixels
    })
}

/// Scales so the long side is `max` pixels (Lanczos3, `fast_image_resize`); never enlarges.
fn resize(pixels: Pixels, max: u32) -> Result<Pixels, CompressError> {
    use fast_image_resize::images::Image;
    use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
    let long = pixels.width.max(pixels.height);
    if long <= max {
        return Ok(pixels);
    }
    let scale = f64::from(max) / f64::from(long);
    let w = ((f64::from(pixels.width) * scale).round() as u32).max(1);
    let h = ((f64::from(pixels.height) * scale).round() as u32).max(1);
    let err = |e: &dyn std::fmt::Display| CompressError::Encode(format!("resize: {e}"));
    let src = Image::from_vec_u8(pixels.width, pixels.height, pixels.rgb, PixelType::U8x3)
        .map_err(|e| err(&e))?;
    let mut dst = Image::new(w, h, PixelType::U8x3);
    Resizer::new()
        .resize(
            &src,
            &mut dst,
            &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3)),
        )
        .map_err(|e| err(&e))?;
    Ok(Pixels {
        rgb: dst.into_vec(),
        width: w,
        height: h,
        scaled: true,
        ..pixels
    })
}

/// Compresses one image (see the module docs).
///
/// # Errors
/// See [`CompressError`].
pub fn compress(
    input: &[u8],
    spec: &OutputSpec,
    limits: &DecodeLimits,
) -> Result<Compressed, CompressError> {
    let format = sniff(input)?;
    if format == ImageFormat::Jpeg
        && spec.format == OutputFormat::Jpeg
        && spec.max_dimension.is_none()
        && spec.target_score.is_none()
        && let Some(out) = jpeg::transcode(input, limits, spec.quality, spec.score)?
    {
        let encoded = Encoded {
            bytes: out.bytes,
            quality: spec.quality,
            score: out.score,
        };
        return Ok(never_larger(input, format, encoded, out.width, out.height));
    }
    jpeg::release_large_buffers();
    let mut pixels = match format {
        ImageFormat::Jpeg => match jpeg::decode(input, limits, spec.max_dimension) {
            Err(CompressError::Decode(_)) => decode_generic(input, format, limits)?,
            other => other?,
        },
        ImageFormat::WebP => match webp::decode_input(input, limits)? {
            Some(pixels) => pixels,
            None => decode_generic(input, format, limits)?,
        },
        _ => decode_generic(input, format, limits)?,
    };
    let converted = match pixels.icc.take() {
        Some(icc) => color::to_srgb(&mut pixels.rgb, &icc)?,
        None => false,
    };
    let rotated = pixels.orientation != Orientation::NoTransforms;
    let cmyk = pixels.cmyk;
    let mut pixels = orient(pixels)?;
    if let Some(max) = spec.max_dimension {
        pixels = resize(pixels, max)?;
    }
    let encoded = encode_scored(&pixels.rgb, pixels.width, pixels.height, spec)?;
    // Keeping the input is only lossless for what a viewer sees if nothing was rotated,
    // colour-converted, scaled or flattened, and the input is in the output's format.
    let same_format = match spec.format {
        OutputFormat::Jpeg => format == ImageFormat::Jpeg,
        OutputFormat::Webp => format == ImageFormat::WebP && webp::is_still_opaque(input),
        OutputFormat::Avif => false,
    };
    if same_format && !converted && !rotated && !cmyk && !pixels.scaled {
        return Ok(never_larger(
            input,
            format,
            encoded,
            pixels.width,
            pixels.height,
        ));
    }
    Ok(Compressed {
        bytes: encoded.bytes,
        width: pixels.width,
        height: pixels.height,
        input_format: format_name(format),
        kept_original: false,
        quality: encoded.quality,
        score: encoded.score,
    })
}

/// An encoding and its score.
struct Encoded {
    bytes: Vec<u8>,
    quality: u8,
    score: Option<f64>,
}

/// Encodes `rgb` in the spec's format at `quality`; with `reference`, also decodes the output
/// as a viewer would and scores it.
fn encode_at(
    rgb: &[u8],
    width: u32,
    height: u32,
    format: OutputFormat,
    quality: u8,
    reference: Option<&score::Reference>,
) -> Result<Encoded, CompressError> {
    let (bytes, decoded) = match format {
        OutputFormat::Jpeg => {
            let bytes = jpeg::encode(rgb, width, height, quality)?;
            let decoded = match reference {
                Some(_) => Some(jpeg::decode_rgb(&bytes, width, height)?),
                None => None,
            };
            (bytes, decoded)
        }
        OutputFormat::Webp => {
            let bytes = webp::encode(rgb, width, height, quality)?;
            let decoded = match reference {
                Some(_) => Some(webp::decode(&bytes)?),
                None => None,
            };
            (bytes, decoded)
        }
        OutputFormat::Avif => {
            let out = avif::encode(rgb, width, height, quality)?;
            (out.bytes, Some(out.decoded))
        }
    };
    let score = reference.zip(decoded).and_then(|(r, d)| r.compare(&d));
    Ok(Encoded {
        bytes,
        quality,
        score,
    })
}

/// Most encodes `quality=auto:<score>` spends on one image.
pub const MAX_SEARCH_ENCODES: usize = 6;

/// How far above the target a found score may be before the search stops early.
const SEARCH_TOLERANCE: f64 = 1.0;

/// Score points per quality step assumed before two samples give a slope (a typical
/// mid-range figure for all three encoders on product photos).
const DEFAULT_SLOPE: f64 = 0.6;

/// The spec's encoding (fixed quality), or the search for the lowest quality whose score
/// reaches `spec.target_score` (see [`search_quality`]).
fn encode_scored(
    rgb: &[u8],
    width: u32,
    height: u32,
    spec: &OutputSpec,
) -> Result<Encoded, CompressError> {
    let reference = if spec.score || spec.target_score.is_some() {
        score::Reference::new(rgb, width, height)
    } else {
        None
    };
    match (spec.target_score, &reference) {
        (Some(target), Some(reference)) => {
            let pixels = u64::from(width) * u64::from(height);
            let encodes = spec.search_encodes(pixels, MAX_SEARCH_ENCODES);
            search_quality(f64::from(target), spec.quality, encodes, |q| {
                encode_at(rgb, width, height, spec.format, q, Some(reference))
            })
        }
        _ => encode_at(
            rgb,
            width,
            height,
            spec.format,
            spec.quality,
            reference.as_ref(),
        ),
    }
}

/// The lowest quality (1–100) whose score reaches `target`, found in at most `encodes` (at
/// most [`MAX_SEARCH_ENCODES`]) calls of `encode`, starting at `start`. Once samples lie on both
/// sides of the target, the next quality is interpolated between the nearest of them (secant)
/// and kept inside the middle half of that bracket; before that, it steps toward the target along the
/// slope of the last two samples ([`DEFAULT_SLOPE`] after the first), aiming
/// [`SEARCH_TOLERANCE`] past it so the target is bracketed soon, and going down at most to a
/// third of the quality in one step. Stops when a score lands
/// within [`SEARCH_TOLERANCE`] above the target or the bracket is one step wide. Returns the
/// lowest-quality encoding that reached the target, or — when none did — the highest-quality
/// one tried.
fn search_quality(
    target: f64,
    start: u8,
    encodes: usize,
    mut encode: impl FnMut(u8) -> Result<Encoded, CompressError>,
) -> Result<Encoded, CompressError> {
    let mut below: Option<Encoded> = None; // highest quality tried that missed the target
    let mut above: Option<Encoded> = None; // lowest quality tried that reached it
    let mut previous: Option<(f64, f64)> = None;
    let mut quality = start.clamp(1, 100);
    for _ in 0..encodes.clamp(1, MAX_SEARCH_ENCODES) {
        let encoded = encode(quality)?;
        let Some(score) = encoded.score else {
            return Ok(encoded);
        };
        let sample = (f64::from(quality), score);
        if score >= target {
            if above.as_ref().is_none_or(|a| encoded.quality < a.quality) {
                above = Some(encoded);
            }
        } else if below.as_ref().is_none_or(|b| encoded.quality > b.quality) {
            below = Some(encoded);
        }
        let lo = below.as_ref().map(|b| (b.quality, b.score.unwrap_or(0.0)));
        let hi = above.as_ref().map(|a| (a.quality, a.score.unwrap_or(0.0)));
        // Score points per quality step, from the last two samples when they differ.
        let slope = previous
            .filter(|(q, _)| (q - sample.0).abs() >= 1.0)
            .map_or(DEFAULT_SLOPE, |(q, s)| {
                ((sample.1 - s) / (sample.0 - q)).max(0.05)
            });
        previous = Some(sample);
        let next = match (lo, hi) {
            (_, Some((q, s))) if s - target <= SEARCH_TOLERANCE || q == 1 => break,
            (Some((100, _)), None) => break,
            (Some((ql, _)), Some((qh, _))) if qh - ql <= 1 => break,
            (Some((ql, sl)), Some((qh, sh))) => {
                let (lo, hi) = (f64::from(ql), f64::from(qh));
                let slope = (sh - sl) / (hi - lo);
                let guess = lo + (target - sl) / slope.max(1e-3);
                // Kept inside the middle half of the bracket: a curve flat on one side would
                // otherwise pull every guess to that end, one step at a time.
                let quarter = (hi - lo) / 4.0;
                guess
                    .clamp(lo + quarter, hi - quarter)
                    .ceil()
                    .clamp(lo + 1.0, hi - 1.0)
            }
            // No lower than a third of the quality in one step: the slope was measured higher
            // up, and curves steepen toward low qualities (libjpeg scales its tables by 5000/q
            // below 50), so a long extrapolation lands far below the target and leaves a wide
            // bracket to close. (A half took more encodes to get down on WebP's flat curves.)
            (None, Some((qh, sh))) => (f64::from(qh) - (sh - (target - SEARCH_TOLERANCE)) / slope)
                .floor()
                .clamp((f64::from(qh) / 3.0).floor().max(1.0), f64::from(qh) - 1.0),
            (Some((ql, sl)), None) => (f64::from(ql) + ((target + SEARCH_TOLERANCE) - sl) / slope)
                .ceil()
                .clamp(f64::from(ql) + 1.0, 100.0),
            (None, None) => break,
        };
        quality = next as u8;
    }
    match (above, below) {
        (Some(a), _) => Ok(a),
        (None, Some(b)) => Ok(b),
        (None, None) => encode(start),
    }
}

/// The encoding, or — when it is not smaller than `input`, which is in the output's format —
/// the input with its metadata removed (lossless: the same pixels a viewer would show; scored
/// 100).
fn never_larger(
    input: &[u8],
    format: ImageFormat,
    encoded: Encoded,
    width: u32,
    height: u32,
) -> Compressed {
    let keep = |bytes: Vec<u8>| Compressed {
        bytes,
        width,
        height,
        input_format: format_name(format),
        kept_original: true,
        quality: encoded.quality,
        score: encoded.score.map(|_| 100.0),
    };
    if encoded.bytes.len() >= input.len() {
        let stripped = match format {
            ImageFormat::WebP => webp::strip_metadata(input),
            _ => jpeg::strip_metadata(input),
        };
        if stripped.len() <= encoded.bytes.len() {
            return keep(stripped);
        }
    }
    Compressed {
        bytes: encoded.bytes,
        width,
        height,
        input_format: format_name(format),
        kept_original: false,
        quality: encoded.quality,
        score: encoded.score,
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The function an [`Engine`] runs per image: [`compress`] in production; tests substitute one
/// that misbehaves.
pub type Codec = fn(&[u8], &OutputSpec, &DecodeLimits) -> Result<Compressed, CompressError>;

/// `codec` on `input`, with a panic turned into [`CompressError::Panicked`] and the thread's
/// libjpeg-turbo handles dropped, so the next image starts clean and the thread lives on.
fn run_isolated(
    codec: Codec,
    input: &[u8],
    spec: &OutputSpec,
    limits: &DecodeLimits,
) -> Result<Compressed, CompressError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| codec(input, spec, limits))) {
        Ok(result) => result,
        Err(panic) => {
            jpeg::reset_codec();
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_owned());
            tracing::error!(%message, "the image codec panicked; the image fails, the thread goes on");
            Err(CompressError::Panicked(pixpress_domain::text::message(
                &message,
            )))
        }
    }
}

/// Runs [`compress`] on a pool of dedicated threads, one per core by default, so downloads on
/// the async runtime overlap compression while CPU work never oversubscribes the cores. Each
/// pool thread keeps its own libjpeg-turbo handles and buffers, so their number — and the
/// memory they hold — is fixed by the pool size. A panic inside the codec fails that image
/// only ([`CompressError::Panicked`]); the thread survives.
#[derive(Debug, Clone)]
pub struct Engine {
    jobs: std::sync::mpsc::Sender<Job>,
    limits: DecodeLimits,
    codec: Codec,
}

impl Engine {
    /// An engine with `threads` compression threads (at least 1). A thread the operating
    /// system refuses to start is logged; the others carry the work.
    #[must_use]
    pub fn new(limits: DecodeLimits, threads: usize) -> Self {
        Self::with_codec(limits, threads, compress)
    }

    /// An engine running `codec` instead of [`compress`] (tests).
    #[must_use]
    pub fn with_codec(limits: DecodeLimits, threads: usize, codec: Codec) -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for n in 0..threads.max(1) {
            let queue = Arc::clone(&queue);
            let spawned = std::thread::Builder::new()
                .name(format!("pixpress-engine-{n}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while taking a job; all senders gone ends the thread.
                        let job = match queue.lock() {
                            Ok(receiver) => receiver.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a compression thread");
            }
        }
        Self {
            jobs,
            limits,
            codec,
        }
    }

    /// An engine with one thread per available core.
    #[must_use]
    pub fn per_core(limits: DecodeLimits) -> Self {
        Self::new(limits, cores())
    }

    /// Compresses `input` on the pool.
    ///
    /// # Errors
    /// As [`compress`]; [`CompressError::Panicked`] when the codec panicked;
    /// [`CompressError::Stopped`] when the pool is gone.
    pub async fn compress(
        &self,
        input: bytes::Bytes,
        spec: OutputSpec,
    ) -> Result<Compressed, CompressError> {
        self.compress_holding(input, spec, ()).await
    }

    /// [`Engine::compress`], holding `hold` (a reservation of the memory `input` takes) until
    /// the job is done with `input`, not until the caller stops waiting: a caller that gives
    /// up (its deadline) leaves the reservation with the job, so the memory it accounts for is
    /// released only when that memory is. A job whose caller is gone before a thread takes it
    /// is skipped, not run.
    ///
    /// # Errors
    /// As [`Engine::compress`].
    pub async fn compress_holding<H: Send + 'static>(
        &self,
        input: bytes::Bytes,
        spec: OutputSpec,
        hold: H,
    ) -> Result<Compressed, CompressError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let limits = self.limits;
        let codec = self.codec;
        let job: Job = Box::new(move || {
            if done.is_closed() {
                // Nobody waits for this image any more.
                return;
            }
            let compressed = run_isolated(codec, &input, &spec, &limits);
            drop(input);
            drop(hold);
            let _ = done.send(compressed);
        });
        self.jobs.send(job).map_err(|_| CompressError::Stopped)?;
        result.await.map_err(|_| CompressError::Stopped)?
    }
}

/// Cores available to this process (at least 1).
#[must_use]
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

#[cfg(test)]
mod tests;
