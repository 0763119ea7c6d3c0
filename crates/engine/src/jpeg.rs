//! JPEG through libjpeg-turbo (TurboJPEG 3 API): header reads, DCT-domain scaled decoding,
//! encoding with IJG quality tables, 4:2:0 chroma subsampling and optimised Huffman tables —
//! the same quantisation and DCT as Pillow/libjpeg at the same quality, so the pixels match and
//! only the entropy coding is smaller. Also the marker-level helpers (EXIF orientation, ICC
//! profile, Adobe transform flag, metadata stripping).

use std::cell::RefCell;

use ::image::metadata::Orientation;
use turbojpeg::{Colorspace, Compressor, Decompressor, Image, PixelFormat, ScalingFactor, Subsamp};

use super::{CompressError, DecodeLimits, Pixels, check_dimensions, cmyk_to_rgb, color};
use pixpress_domain::image_limits::MAX_SCANS;

/// One decompressor and one compressor per thread, created on first use and reused: creating
/// TurboJPEG handles costs more than decoding a small image. The pixel buffer is reused too, up
/// to [`KEEP_PIXELS_BYTES`], so a stream of photos stops faulting in fresh pages (a fresh 24 MP
/// pixel buffer costs about 18,000 page faults, some 35 ms of kernel time); larger buffers are
/// released after use so one huge image does not pin its memory (see [`KEEP_PIXELS_BYTES`] for
/// when a kept one goes). The output buffer is kept up to [`KEEP_BUFFER_BYTES`] of worst-case
/// output.
struct Codec {
    decompressor: Decompressor,
    compressor: Compressor,
    pixels: Vec<u8>,
    output: Vec<u8>,
}

/// Largest output buffer kept between images: 16 MiB (the worst case of a 5.5 MP image;
/// product photos fit). It is sized for the worst case and zeroed when it grows, so it stays
/// small.
const KEEP_BUFFER_BYTES: usize = 16 << 20;

/// Largest pixel buffer kept between JPEG transcodes: 96 MiB (a 32 MP RGB photo, beyond most
/// cameras). At most one per engine thread; released after any transcode (failed ones too)
/// that left it larger, before any other kind of image is decoded ([`release_large_buffers`]),
/// and before a transcode that needs less than half of it, so a thread holds at most twice the
/// pixels of the image at hand (or 16 MiB).
const KEEP_PIXELS_BYTES: usize = 96 << 20;

thread_local! {
    static CODEC: RefCell<Option<Codec>> = const { RefCell::new(None) };
}

fn with_codec<T>(
    f: impl FnOnce(&mut Codec) -> Result<T, CompressError>,
) -> Result<T, CompressError> {
    CODEC.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(Codec {
                decompressor: Decompressor::new()
                    .map_err(|e| CompressError::Decode(e.to_string()))?,
                compressor: Compressor::new().map_err(|e| CompressError::Encode(e.to_string()))?,
                pixels: Vec::new(),
                output: Vec::new(),
            });
        }
        match slot.as_mut() {
            Some(codec) => f(codec),
            None => Err(CompressError::Decode("no codec".to_owned())),
        }
    })
}

/// Drops this thread's handles and buffers, so the next image starts from fresh ones (after a
/// panic left them in an unknown state).
pub(super) fn reset_codec() {
    CODEC.with(|cell| {
        if let Ok(mut slot) = cell.try_borrow_mut() {
            *slot = None;
        }
    });
}

/// Releases this thread's pixel buffer when it is larger than [`KEEP_BUFFER_BYTES`], before an
/// image that does not reuse it (a PNG, a WebP, a JPEG to rotate or colour-convert), so the
/// kept buffer never adds to that image's memory.
pub(super) fn release_large_buffers() {
    CODEC.with(|cell| {
        if let Ok(mut slot) = cell.try_borrow_mut()
            && let Some(codec) = slot.as_mut()
            && codec.pixels.capacity() > KEEP_BUFFER_BYTES
        {
            codec.pixels = Vec::new();
        }
    });
}

/// libjpeg reports a file that ends early as a warning ("Premature end of JPEG file"); the
/// TurboJPEG API turns warnings into errors, so a partial download never becomes a half-grey
/// image.
fn classify(e: &turbojpeg::Error) -> CompressError {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    if lower.contains("more than") && lower.contains("scans") {
        let limit = text
            .split_whitespace()
            .find_map(|word| word.parse().ok())
            .unwrap_or(MAX_SCANS);
        CompressError::TooManyScans(limit)
    } else if lower.contains("premature end")
        || lower.contains("ran out of")
        || lower.contains("truncat")
    {
        CompressError::Truncated(text)
    } else {
        CompressError::Decode(text)
    }
}

/// Markers read from the segments before the first scan.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Markers {
    /// EXIF orientation (APP1 `Exif`).
    pub orientation: Option<Orientation>,
    /// ICC profile reassembled from its APP2 `ICC_PROFILE` chunks.
    pub icc: Option<Vec<u8>>,
    /// An Adobe APP14 segment is present (CMYK data is then stored inverted, as Photoshop does).
    pub adobe: bool,
}

/// Walks the marker segments up to the first SOS (ITU T.81 Annex B).
pub(super) fn read_markers(jpeg: &[u8]) -> Markers {
    let mut markers = Markers::default();
    let mut icc_chunks: Vec<(u8, &[u8])> = Vec::new();
    for (marker, payload) in segments(jpeg) {
        match marker {
            0xE1 if payload.starts_with(b"Exif\0\0") => {
                markers.orientation = Orientation::from_exif_chunk(&payload[6..]);
            }
            0xE2 if payload.starts_with(b"ICC_PROFILE\0") && payload.len() > 14 => {
                icc_chunks.push((payload[12], &payload[14..]));
            }
            0xEE if payload.starts_with(b"Adobe") => markers.adobe = true,
            _ => {}
        }
    }
    if !icc_chunks.is_empty() {
        icc_chunks.sort_by_key(|(seq, _)| *seq);
        markers.icc = Some(
            icc_chunks
                .into_iter()
                .flat_map(|(_, data)| data.iter().copied())
                .collect(),
        );
    }
    markers
}

/// `(marker, payload)` of every segment with a length before the first SOS.
fn segments(jpeg: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut at = 2usize;
    std::iter::from_fn(move || {
        loop {
            if jpeg.get(at) != Some(&0xFF) {
                return None;
            }
            let marker = *jpeg.get(at + 1)?;
            match marker {
                0xFF => at += 1,
                0x01 | 0xD0..=0xD8 => at += 2,
                0xD9 | 0xDA => return None,
                _ => {
                    let len =
                        usize::from(u16::from_be_bytes([*jpeg.get(at + 2)?, *jpeg.get(at + 3)?]));
                    let payload = jpeg.get(at + 4..at + 2 + len.max(2))?;
                    at += 2 + len;
                    return Some((marker, payload));
                }
            }
        }
    })
}

/// The JPEG with APP1–APP13, APP15 (EXIF, XMP, ICC, IPTC, …) and COM segments removed; JFIF
/// (APP0), Adobe (APP14, needed to decode colours) and everything from the first scan on are
/// kept byte for byte. Lossless: the entropy-coded data is untouched.
pub(super) fn strip_metadata(jpeg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(jpeg.len());
    out.extend_from_slice(&jpeg[..2.min(jpeg.len())]);
    let mut at = 2usize;
    while at + 4 <= jpeg.len() && jpeg[at] == 0xFF {
        let marker = jpeg[at + 1];
        if marker == 0xDA || marker == 0xD9 {
            break;
        }
        if marker == 0xFF {
            at += 1;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
        let end = (at + 2 + len).min(jpeg.len());
        let metadata = matches!(marker, 0xE1..=0xED | 0xEF | 0xFE);
        if !metadata {
            out.extend_from_slice(&jpeg[at..end]);
        }
        at = end;
    }
    out.extend_from_slice(&jpeg[at.min(jpeg.len())..]);
    out
}

/// The largest DCT scaling (1/8, 1/4, 1/2) that keeps the long side at least `target` pixels.
fn scaling_for(width: usize, height: usize, target: Option<u32>) -> ScalingFactor {
    let long = width.max(height);
    let Some(target) = target.map(|t| t as usize) else {
        return ScalingFactor::ONE;
    };
    for denom in [8usize, 4, 2] {
        if long.div_ceil(denom) >= target {
            return ScalingFactor::new(1, denom);
        }
    }
    ScalingFactor::ONE
}

/// The header, once its dimensions pass `limits` — read before any pixel buffer exists.
fn checked_header(
    decompressor: &mut Decompressor,
    input: &[u8],
    limits: &DecodeLimits,
) -> Result<turbojpeg::DecompressHeader, CompressError> {
    // Set on every decode: the handle is reused across images and limits may differ.
    decompressor
        .set_scan_limit(limits.max_scans)
        .map_err(|e| CompressError::Decode(e.to_string()))?;
    let header = decompressor.read_header(input).map_err(|e| classify(&e))?;
    check_dimensions(
        u32::try_from(header.width).unwrap_or(u32::MAX),
        u32::try_from(header.height).unwrap_or(u32::MAX),
        limits,
    )?;
    Ok(header)
}

/// Decodes a JPEG into 8-bit RGB, scaled in the DCT domain toward `target` (long side, pixels).
/// CMYK and YCCK JPEGs are decoded to CMYK by libjpeg-turbo and converted here.
///
/// # Errors
/// [`CompressError::TooManyPixels`] from the header before any pixel buffer exists;
/// [`CompressError::Truncated`] for partial files; [`CompressError::Decode`] otherwise.
pub(super) fn decode(
    input: &[u8],
    limits: &DecodeLimits,
    target: Option<u32>,
) -> Result<Pixels, CompressError> {
    with_codec(|codec| {
        let header = checked_header(&mut codec.decompressor, input, limits)?;
        let (width, height) = (header.width, header.height);
        let markers = read_markers(input);
        let cmyk = matches!(header.colorspace, Colorspace::CMYK | Colorspace::YCCK);
        let factor = if header.is_lossless {
            ScalingFactor::ONE
        } else {
            scaling_for(width, height, target)
        };
        codec
            .decompressor
            .set_scaling_factor(factor)
            .map_err(|e| classify(&e))?;
        let (w, h) = (factor.scale(width), factor.scale(height));
        let format = if cmyk {
            PixelFormat::CMYK
        } else {
            PixelFormat::RGB
        };
        let pitch = w * format.size();
        let mut buffer = vec![0u8; pitch * h];
        codec
            .decompressor
            .decompress(
                input,
                Image {
                    pixels: buffer.as_mut_slice(),
                    width: w,
                    pitch,
                    height: h,
                    format,
                },
            )
            .map_err(|e| classify(&e))?;
        let rgb = if cmyk {
            cmyk_to_rgb(&buffer, markers.adobe)
        } else {
            buffer
        };
        Ok(Pixels {
            rgb,
            width: u32::try_from(w).unwrap_or(u32::MAX),
            height: u32::try_from(h).unwrap_or(u32::MAX),
            orientation: markers.orientation.unwrap_or(Orientation::NoTransforms),
            icc: markers.icc,
            cmyk,
            scaled: factor != ScalingFactor::ONE,
        })
    })
}

/// A JPEG re-encoded without leaving libjpeg-turbo's buffers.
pub(super) struct Transcoded {
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
    /// SSIMULACRA2 of `bytes` against the input's pixels.
    pub score: Option<f64>,
}

/// Decodes `jpeg` (one we encoded: RGB, `width`×`height`) to 8-bit RGB with `decompressor`.
fn decompress_rgb(
    decompressor: &mut Decompressor,
    jpeg: &[u8],
    width: usize,
    height: usize,
) -> Result<Vec<u8>, CompressError> {
    decompressor
        .set_scaling_factor(ScalingFactor::ONE)
        .map_err(|e| classify(&e))?;
    let mut rgb = vec![0u8; width * height * 3];
    decompressor
        .decompress(
            jpeg,
            Image {
                pixels: rgb.as_mut_slice(),
                width,
                pitch: width * 3,
                height,
                format: PixelFormat::RGB,
            },
        )
        .map_err(|e| classify(&e))?;
    Ok(rgb)
}

/// Decodes a JPEG we encoded (`width`×`height`) to 8-bit RGB, as a viewer shows it.
///
/// # Errors
/// [`CompressError::Decode`] when libjpeg-turbo fails.
pub(super) fn decode_rgb(jpeg: &[u8], width: u32, height: u32) -> Result<Vec<u8>, CompressError> {
    with_codec(|codec| {
        decompress_rgb(
            &mut codec.decompressor,
            jpeg,
            width as usize,
            height as usize,
        )
    })
}

/// The common case — an RGB/YCbCr/grey JPEG, upright, sRGB or untagged, no resize — decoded
/// into a reused per-thread buffer and encoded straight from it. `None` when the image needs
/// the general path (EXIF rotation, a non-sRGB profile, CMYK). When `scored`, the output is
/// scored against the decoded input before the buffer is reused.
///
/// # Errors
/// As [`decode`] and [`encode`].
pub(super) fn transcode(
    input: &[u8],
    limits: &DecodeLimits,
    quality: u8,
    scored: bool,
) -> Result<Option<Transcoded>, CompressError> {
    let markers = read_markers(input);
    if markers
        .orientation
        .is_some_and(|o| o != Orientation::NoTransforms)
        || markers.icc.as_deref().is_some_and(color::needs_conversion)
    {
        return Ok(None);
    }
    with_codec(|codec| {
        let result = transcode_in(codec, input, limits, quality, scored);
        // On every exit, errors included: a huge image's buffer is never kept.
        if codec.pixels.capacity() > KEEP_PIXELS_BYTES {
            codec.pixels = Vec::new();
        }
        result
    })
}

/// [`transcode`] on this thread's codec, once the markers allow it.
fn transcode_in(
    codec: &mut Codec,
    input: &[u8],
    limits: &DecodeLimits,
    quality: u8,
    scored: bool,
) -> Result<Option<Transcoded>, CompressError> {
    let header = checked_header(&mut codec.decompressor, input, limits)?;
    let (w, h) = (header.width, header.height);
    if matches!(header.colorspace, Colorspace::CMYK | Colorspace::YCCK) {
        return Ok(None);
    }
    codec
        .decompressor
        .set_scaling_factor(ScalingFactor::ONE)
        .map_err(|e| classify(&e))?;
    let len = w * h * 3;
    // A kept buffer far larger than this image needs is dropped, so the thread holds at most
    // twice this image's pixels (or 16 MiB).
    if codec.pixels.capacity() > KEEP_BUFFER_BYTES && codec.pixels.capacity() > 2 * len {
        codec.pixels = Vec::new();
    }
    if codec.pixels.len() < len {
        codec.pixels.reserve_exact(len - codec.pixels.len());
        codec.pixels.resize(len, 0);
    }
    let pixels = &mut codec.pixels[..len];
    let image = Image {
        pixels,
        width: w,
        pitch: w * 3,
        height: h,
        format: PixelFormat::RGB,
    };
    codec
        .decompressor
        .decompress(input, image)
        .map_err(|e| classify(&e))?;
    configure(&mut codec.compressor, quality)?;
    let image = Image {
        pixels: &codec.pixels[..len],
        width: w,
        pitch: w * 3,
        height: h,
        format: PixelFormat::RGB,
    };
    let bytes = compress(&mut codec.compressor, &mut codec.output, image)?;
    let (width, height) = (
        u32::try_from(w).unwrap_or(u32::MAX),
        u32::try_from(h).unwrap_or(u32::MAX),
    );
    let score = if scored {
        super::score::Reference::new(&codec.pixels[..len], width, height).and_then(|reference| {
            let decoded = decompress_rgb(&mut codec.decompressor, &bytes, w, h).ok()?;
            reference.compare(&decoded)
        })
    } else {
        None
    };
    Ok(Some(Transcoded {
        bytes,
        width,
        height,
        score,
    }))
}

fn configure(c: &mut Compressor, quality: u8) -> Result<(), CompressError> {
    let err = |e: turbojpeg::Error| CompressError::Encode(e.to_string());
    c.set_quality(i32::from(quality.clamp(1, 100)))
        .map_err(err)?;
    c.set_subsamp(Subsamp::Sub2x2).map_err(err)?;
    c.set_optimize(true).map_err(err)
}

/// Encodes 8-bit RGB as a baseline JPEG: IJG quality tables at `quality` (1–100), 4:2:0 chroma
/// subsampling, optimised Huffman tables, accurate integer DCT, no metadata beyond JFIF.
///
/// # Errors
/// [`CompressError::Encode`] when libjpeg-turbo fails.
pub(super) fn encode(
    rgb: &[u8],
    width: u32,
    height: u32,
    quality: u8,
) -> Result<Vec<u8>, CompressError> {
    with_codec(|codec| {
        configure(&mut codec.compressor, quality)?;
        let (w, h) = (width as usize, height as usize);
        let image = Image {
            pixels: rgb,
            width: w,
            pitch: w * 3,
            height: h,
            format: PixelFormat::RGB,
        };
        compress(&mut codec.compressor, &mut codec.output, image)
    })
}

/// Compresses `image`. Up to [`KEEP_BUFFER_BYTES`] of worst-case output, into the thread's
/// reused buffer (libjpeg-turbo writes into it without reallocating); larger images into a
/// buffer libjpeg-turbo grows as it writes, so memory follows the output size.
fn compress(
    compressor: &mut Compressor,
    output: &mut Vec<u8>,
    image: Image<&[u8]>,
) -> Result<Vec<u8>, CompressError> {
    let err = |e: turbojpeg::Error| CompressError::Encode(e.to_string());
    let worst_case = compressor.buf_len(image.width, image.height).map_err(err)?;
    if worst_case > KEEP_BUFFER_BYTES {
        return compressor
            .compress_to_owned(image)
            .map(|buf| buf.to_vec())
            .map_err(err);
    }
    if output.len() < worst_case {
        output.resize(worst_case, 0);
    }
    let written = compressor
        .compress_to_slice(image, &mut output[..worst_case])
        .map_err(err)?;
    Ok(output[..written].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dct_scaling_keeps_the_long_side_at_or_above_the_target() {
        assert_eq!(scaling_for(4000, 3000, Some(400)), ScalingFactor::new(1, 8));
        assert_eq!(
            scaling_for(4000, 3000, Some(1000)),
            ScalingFactor::new(1, 4)
        );
        assert_eq!(
            scaling_for(4000, 3000, Some(2000)),
            ScalingFactor::new(1, 2)
        );
        assert_eq!(scaling_for(4000, 3000, Some(3000)), ScalingFactor::ONE);
        assert_eq!(scaling_for(4000, 3000, None), ScalingFactor::ONE);
    }

    #[test]
    fn stripping_removes_exif_icc_and_comments_but_keeps_jfif_and_scan_data() {
        let mut jpeg = vec![0xFF, 0xD8];
        jpeg.extend_from_slice(&[0xFF, 0xE0, 0, 6, b'J', b'F', b'I', b'F']);
        jpeg.extend_from_slice(&[0xFF, 0xE1, 0, 8, b'E', b'x', b'i', b'f', 0, 0]);
        jpeg.extend_from_slice(&[0xFF, 0xFE, 0, 4, b'h', b'i']);
        jpeg.extend_from_slice(&[0xFF, 0xDB, 0, 3, 7]);
        jpeg.extend_from_slice(&[0xFF, 0xDA, 0, 2, 1, 2, 3, 0xFF, 0xD9]);
        let stripped = strip_metadata(&jpeg);
        let mut expected = vec![
            0xFF, 0xD8, 0xFF, 0xE0, 0, 6, b'J', b'F', b'I', b'F', 0xFF, 0xDB, 0, 3, 7,
        ];
        expected.extend_from_slice(&[0xFF, 0xDA, 0, 2, 1, 2, 3, 0xFF, 0xD9]);
        assert_eq!(stripped, expected);
    }
}
