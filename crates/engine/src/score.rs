//! SSIMULACRA2 (Jon Sneyers, Cloudinary; reference implementation libjxl
//! `tools/ssimulacra2.cc`), computed with `fast-ssim2`, whose scores follow the reference's.
//! 100 means identical; 90 is visually lossless, 70 high quality, 50 medium, 30 low.

use fast_ssim2::{PixelDescriptor, PixelSlice, Ssimulacra2Reference};

/// Largest image scored, in pixels (4 MP, the size of a large product photo). The metric holds
/// several full-size `f32` planes of both images: about 110 bytes a pixel (a 1.96 MP photo
/// raised the bench's peak RSS from 39 to 253 MB), so 4 MP costs about 440 MB on the worker's
/// 1,769 MB. Larger images get no score, and `auto:` gives them the format's default quality.
pub const SCORE_MAX_PIXELS: u64 = 4_000_000;

/// The source pixels (8-bit sRGB RGB, `width`×`height`), prepared once and compared with any
/// number of encodings of them.
pub struct Reference {
    reference: Ssimulacra2Reference,
    width: u32,
    height: u32,
}

impl std::fmt::Debug for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reference")
            .field("width", &self.width)
            .field("height", &self.height)
            .finish_non_exhaustive()
    }
}

fn slice(rgb: &[u8], width: u32, height: u32) -> Option<PixelSlice<'_>> {
    PixelSlice::new(
        rgb,
        width,
        height,
        width as usize * 3,
        PixelDescriptor::RGB8_SRGB,
    )
    .ok()
}

impl Reference {
    /// `None` when the image is larger than [`SCORE_MAX_PIXELS`] or the metric refuses it
    /// (a buffer shorter than `width`×`height`×3 bytes, a side under 8 pixels).
    #[must_use]
    pub fn new(rgb: &[u8], width: u32, height: u32) -> Option<Self> {
        if u64::from(width) * u64::from(height) > SCORE_MAX_PIXELS {
            return None;
        }
        let reference = Ssimulacra2Reference::new(&slice(rgb, width, height)?)
            .map_err(|e| tracing::debug!(error = %e, "cannot score this image"))
            .ok()?;
        Some(Self {
            reference,
            width,
            height,
        })
    }

    /// The SSIMULACRA2 score (at most 100) of `decoded` (8-bit sRGB RGB of the same size)
    /// against the source; `None` when the buffer does not match the size.
    #[must_use]
    pub fn compare(&self, decoded: &[u8]) -> Option<f64> {
        let distorted = slice(decoded, self.width, self.height)?;
        self.reference
            .compare(&distorted)
            .map_err(|e| tracing::debug!(error = %e, "cannot score this image"))
            .ok()
    }
}
