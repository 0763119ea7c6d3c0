//! Colour conversion to sRGB: embedded ICC profiles through moxcms, CMYK by the device formula.

use moxcms::{ColorProfile, DataColorSpace, Layout, TransformOptions};

use super::CompressError;

/// How close (in XYZ) a profile's colorants must be to sRGB's to count as sRGB.
const SRGB_TOLERANCE: f64 = 0.003;

fn is_srgb_like(profile: &ColorProfile) -> bool {
    let srgb = ColorProfile::new_srgb();
    let close = |a: &moxcms::Xyzd, b: &moxcms::Xyzd| {
        (a.x - b.x).abs() < SRGB_TOLERANCE
            && (a.y - b.y).abs() < SRGB_TOLERANCE
            && (a.z - b.z).abs() < SRGB_TOLERANCE
    };
    profile.is_matrix_shaper()
        && close(&profile.red_colorant, &srgb.red_colorant)
        && close(&profile.green_colorant, &srgb.green_colorant)
        && close(&profile.blue_colorant, &srgb.blue_colorant)
}

/// `true` when pixels tagged with `icc` must be converted to look right in sRGB: a readable
/// RGB profile whose primaries are not sRGB's.
pub(super) fn needs_conversion(icc: &[u8]) -> bool {
    ColorProfile::new_from_slice(icc)
        .is_ok_and(|p| p.color_space == DataColorSpace::Rgb && !is_srgb_like(&p))
}

/// Converts 8-bit RGB pixels tagged with `icc` to sRGB in place. Returns `false` (pixels
/// untouched) for sRGB-like profiles — so sRGB-tagged photos stay bit-identical to an
/// unmanaged pipeline — and for profiles that are not RGB or cannot be read (treated as sRGB,
/// as browsers do).
///
/// # Errors
/// [`CompressError::Decode`] when a readable RGB profile cannot build a transform.
pub(super) fn to_srgb(rgb: &mut [u8], icc: &[u8]) -> Result<bool, CompressError> {
    let Ok(profile) = ColorProfile::new_from_slice(icc) else {
        return Ok(false);
    };
    if profile.color_space != DataColorSpace::Rgb || is_srgb_like(&profile) {
        return Ok(false);
    }
    let transform = profile
        .create_transform_8bit(
            Layout::Rgb,
            &ColorProfile::new_srgb(),
            Layout::Rgb,
            TransformOptions::default(),
        )
        .map_err(|e| CompressError::Decode(format!("ICC profile: {e}")))?;
    // Convert in slices so the scratch buffer stays small whatever the image size.
    let mut scratch = vec![0u8; 3 * 16_384];
    for chunk in rgb.chunks_mut(scratch.len()) {
        let out = &mut scratch[..chunk.len()];
        transform
            .transform(chunk, out)
            .map_err(|e| CompressError::Decode(format!("ICC transform: {e}")))?;
        chunk.copy_from_slice(out);
    }
    Ok(true)
}

/// CMYK (4 bytes per pixel) to RGB. With an Adobe APP14 marker the samples are stored inverted
/// (255 = no ink), as Photoshop and Pillow write them; without one, 255 = full ink.
#[must_use]
pub fn cmyk_to_rgb(cmyk: &[u8], inverted: bool) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(cmyk.len() / 4 * 3);
    for px in cmyk.chunks_exact(4) {
        let [c, m, y, k] = if inverted {
            [px[0], px[1], px[2], px[3]]
        } else {
            [255 - px[0], 255 - px[1], 255 - px[2], 255 - px[3]]
        };
        let k = u32::from(k);
        for ink in [c, m, y] {
            rgb.push(u8::try_from((u32::from(ink) * k + 127) / 255).unwrap_or(u8::MAX));
        }
    }
    rgb
}
