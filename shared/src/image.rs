//! The compression engine: sniff → header check → decode → orient → flatten → resize → JPEG.
//!
//! Pure and CPU-bound: call it from `spawn_blocking` (see [`Engine`], which also bounds how
//! many images are decoded at once so peak memory stays proportional to the core count).

use std::io::Cursor;
use std::sync::Arc;

use ::image::codecs::jpeg::JpegEncoder;
use ::image::{
    DynamicImage, ExtendedColorType, ImageDecoder, ImageError as CodecError, ImageFormat,
    ImageReader, Limits, RgbImage,
};
use tokio::sync::Semaphore;

use crate::domain::model::OutputSpec;

/// Decode limits, checked against the header before any pixel buffer is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most pixels (width × height) of an input (default 50,000,000).
    pub max_pixels: u64,
    /// Longest side of an input in pixels (default 16,384).
    pub max_side: u32,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_pixels: 50_000_000,
            max_side: 16_384,
        }
    }
}

/// A compressed image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compressed {
    /// The encoded output (JPEG).
    pub bytes: Vec<u8>,
    /// Output width in pixels.
    pub width: u32,
    /// Output height in pixels.
    pub height: u32,
    /// Input format name (`jpeg`, `png`, `webp`, `gif`).
    pub input_format: &'static str,
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
    /// The data is damaged or truncated.
    #[error("cannot decode image: {0}")]
    Decode(String),
    /// The encoder failed.
    #[error("cannot encode JPEG: {0}")]
    Encode(String),
}

impl CompressError {
    /// The stable per-image error code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotAnImage => "not_an_image",
            Self::UnsupportedFormat(_) => "unsupported_format",
            Self::TooManyPixels { .. } => "too_many_pixels",
            Self::Decode(_) => "decode_error",
            Self::Encode(_) => "encode_error",
        }
    }
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

fn decode_error(e: CodecError) -> CompressError {
    match e {
        CodecError::Unsupported(u) => CompressError::UnsupportedFormat(u.to_string()),
        other => CompressError::Decode(other.to_string()),
    }
}

/// Compresses one image: EXIF orientation applied, alpha flattened onto white, scaled down to
/// `spec.max_dimension` if set, encoded as JPEG at `spec.quality`. Animated inputs use their
/// first frame.
///
/// # Errors
/// See [`CompressError`]; dimensions are checked against `limits` from the header, before any
/// pixel buffer is allocated, and the decoder's allocation is capped as well.
pub fn compress(
    input: &[u8],
    spec: &OutputSpec,
    limits: &DecodeLimits,
) -> Result<Compressed, CompressError> {
    let format = sniff(input)?;
    let mut reader = ImageReader::with_format(Cursor::new(input), format);
    let mut codec_limits = Limits::default();
    codec_limits.max_image_width = Some(limits.max_side);
    codec_limits.max_image_height = Some(limits.max_side);
    // RGBA16 is the widest buffer a decoder allocates: 8 bytes per pixel, plus headroom.
    codec_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(codec_limits);
    let mut decoder = reader.into_decoder().map_err(|e| match e {
        CodecError::Limits(_) => too_many_pixels(0, 0, limits),
        other => decode_error(other),
    })?;
    let (width, height) = decoder.dimensions();
    if width > limits.max_side
        || height > limits.max_side
        || u64::from(width) * u64::from(height) > limits.max_pixels
    {
        return Err(too_many_pixels(width, height, limits));
    }
    let orientation = decoder.orientation().map_err(decode_error)?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    image.apply_orientation(orientation);
    if let Some(max) = spec.max_dimension
        && (image.width() > max || image.height() > max)
    {
        image = image.resize(max, max, ::image::imageops::FilterType::Lanczos3);
    }
    let rgb = flatten_onto_white(image);
    let mut bytes = Vec::with_capacity(input.len() / 2);
    JpegEncoder::new_with_quality(&mut bytes, spec.quality.clamp(1, 100))
        .encode(
            rgb.as_raw(),
            rgb.width(),
            rgb.height(),
            ExtendedColorType::Rgb8,
        )
        .map_err(|e| CompressError::Encode(e.to_string()))?;
    Ok(Compressed {
        bytes,
        width: rgb.width(),
        height: rgb.height(),
        input_format: format_name(format),
    })
}

fn too_many_pixels(width: u32, height: u32, limits: &DecodeLimits) -> CompressError {
    CompressError::TooManyPixels {
        width,
        height,
        max_pixels: limits.max_pixels,
        max_side: limits.max_side,
    }
}

/// 8-bit RGB with any alpha composited over white; 16-bit samples are scaled, not clipped.
fn flatten_onto_white(image: DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.into_rgb8();
    }
    let rgba = image.into_rgba8();
    let (width, height) = rgba.dimensions();
    let mut rgb = RgbImage::new(width, height);
    for (out, px) in rgb.pixels_mut().zip(rgba.pixels()) {
        let alpha = u32::from(px[3]);
        for c in 0..3 {
            let blended = (u32::from(px[c]) * alpha + 255 * (255 - alpha) + 127) / 255;
            out[c] = u8::try_from(blended).unwrap_or(u8::MAX);
        }
    }
    rgb
}

/// Runs [`compress`] on the blocking pool, at most `permits` images at a time (default: one per
/// core), so downloads overlap compression while memory stays bounded.
#[derive(Debug, Clone)]
pub struct Engine {
    permits: Arc<Semaphore>,
    limits: DecodeLimits,
}

impl Engine {
    /// An engine running at most `concurrency` compressions at once (at least 1).
    #[must_use]
    pub fn new(limits: DecodeLimits, concurrency: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            limits,
        }
    }

    /// An engine with one permit per available core.
    #[must_use]
    pub fn per_core(limits: DecodeLimits) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self::new(limits, cores)
    }

    /// Compresses `input` off the async runtime.
    ///
    /// # Errors
    /// As [`compress`]; a panicking or cancelled blocking task becomes [`CompressError::Decode`].
    pub async fn compress(
        &self,
        input: bytes::Bytes,
        spec: OutputSpec,
    ) -> Result<Compressed, CompressError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| CompressError::Decode(e.to_string()))?;
        let limits = self.limits;
        tokio::task::spawn_blocking(move || compress(&input, &spec, &limits))
            .await
            .map_err(|e| CompressError::Decode(format!("compression task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::image::{ImageBuffer, Rgba, RgbaImage};

    fn spec() -> OutputSpec {
        OutputSpec::default()
    }

    fn png(image: &DynamicImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    fn decode(bytes: &[u8]) -> DynamicImage {
        ::image::load_from_memory_with_format(bytes, ImageFormat::Jpeg).unwrap()
    }

    fn corpus(name: &str) -> Vec<u8> {
        let path = format!("{}/../cli/assets/demo/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap()
    }

    #[test]
    fn real_photo_becomes_a_smaller_jpeg_at_quality_50() {
        let input = corpus("p01_dragonfly_1000sq.jpg");
        let out = compress(&input, &spec(), &DecodeLimits::default()).unwrap();
        assert_eq!((out.width, out.height), (1000, 1000));
        assert!(
            out.bytes.len() < input.len(),
            "{} >= {}",
            out.bytes.len(),
            input.len()
        );
        assert_eq!(sniff(&out.bytes), Ok(ImageFormat::Jpeg));
        let q90 = compress(
            &input,
            &OutputSpec::new(90, None).unwrap(),
            &DecodeLimits::default(),
        )
        .unwrap();
        assert!(q90.bytes.len() > out.bytes.len());
    }

    #[test]
    fn rgba_cutout_is_flattened_onto_white() {
        let mut img: RgbaImage = ImageBuffer::from_pixel(16, 16, Rgba([0, 0, 0, 0]));
        img.put_pixel(0, 0, Rgba([255, 0, 0, 255]));
        let out = compress(
            &png(&DynamicImage::ImageRgba8(img)),
            &spec(),
            &DecodeLimits::default(),
        )
        .unwrap();
        let decoded = decode(&out.bytes).to_rgb8();
        let corner = decoded.get_pixel(15, 15);
        assert!(
            corner.0.iter().all(|&c| c > 245),
            "transparent area is not white: {corner:?}"
        );
    }

    #[test]
    fn real_webp_and_progressive_jpeg_compress() {
        for name in ["p08_path_1000sq.webp", "p02_ladybird_1000sq.jpg"] {
            let out = compress(&corpus(name), &spec(), &DecodeLimits::default()).unwrap();
            assert_eq!(sniff(&out.bytes), Ok(ImageFormat::Jpeg), "{name}");
        }
    }

    #[test]
    fn sixteen_bit_input_is_scaled_not_clipped() {
        let img = ::image::ImageBuffer::<::image::Luma<u16>, _>::from_pixel(
            8,
            8,
            ::image::Luma([32768u16]),
        );
        let out = compress(
            &png(&DynamicImage::ImageLuma16(img)),
            &spec(),
            &DecodeLimits::default(),
        )
        .unwrap();
        let px = decode(&out.bytes).to_rgb8().get_pixel(4, 4).0;
        assert!((120..=136).contains(&px[0]), "mid grey became {px:?}");
    }

    #[test]
    fn exif_orientation_6_turns_the_image_upright() {
        // A 20×10 JPEG tagged "rotate 90° CW" must come out 10×20.
        let img =
            DynamicImage::ImageRgb8(RgbImage::from_pixel(20, 10, ::image::Rgb([200, 10, 10])));
        let mut jpeg = Vec::new();
        JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(&img)
            .unwrap();
        let tagged = with_exif_orientation(&jpeg, 6);
        let out = compress(&tagged, &spec(), &DecodeLimits::default()).unwrap();
        assert_eq!((out.width, out.height), (10, 20));
    }

    /// Inserts an APP1 Exif segment with one Orientation entry after SOI.
    fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        let mut tiff = Vec::new();
        tiff.extend_from_slice(b"MM\x00\x2a\x00\x00\x00\x08");
        tiff.extend_from_slice(&1u16.to_be_bytes());
        tiff.extend_from_slice(&0x0112u16.to_be_bytes());
        tiff.extend_from_slice(&3u16.to_be_bytes());
        tiff.extend_from_slice(&1u32.to_be_bytes());
        tiff.extend_from_slice(&orientation.to_be_bytes());
        tiff.extend_from_slice(&[0, 0]);
        tiff.extend_from_slice(&0u32.to_be_bytes());
        let mut payload = b"Exif\x00\x00".to_vec();
        payload.extend_from_slice(&tiff);
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&u16::try_from(payload.len() + 2).unwrap().to_be_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn pixel_limit_is_enforced_from_the_header() {
        let input = corpus("p01_dragonfly_1000sq.jpg");
        let limits = DecodeLimits {
            max_pixels: 500_000,
            max_side: 16_384,
        };
        let err = compress(&input, &spec(), &limits).unwrap_err();
        assert_eq!(err.code(), "too_many_pixels");
        assert!(err.to_string().contains("1000×1000"));
    }

    #[test]
    fn html_is_not_an_image_and_garbage_jpeg_is_a_decode_error() {
        let err = compress(
            b"<!doctype html><html>nope</html>",
            &spec(),
            &DecodeLimits::default(),
        )
        .unwrap_err();
        assert_eq!(err.code(), "not_an_image");
        let mut broken = vec![0xFF, 0xD8, 0xFF, 0xDB];
        broken.extend_from_slice(&[7u8; 64]);
        let err = compress(&broken, &spec(), &DecodeLimits::default()).unwrap_err();
        assert_eq!(err.code(), "decode_error");
    }

    #[test]
    fn max_dimension_scales_the_long_side_down() {
        let input = corpus("p01_dragonfly_1000sq.jpg");
        let out = compress(
            &input,
            &OutputSpec::new(50, Some(400)).unwrap(),
            &DecodeLimits::default(),
        )
        .unwrap();
        assert_eq!((out.width, out.height), (400, 400));
    }
}
