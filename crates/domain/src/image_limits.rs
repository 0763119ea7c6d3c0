//! Limits on input images, checked by the compression engine before any pixel buffer exists.
//! Here, outside the engine, because every function's configuration carries them.

/// Most scans a progressive JPEG may have: libjpeg-turbo's own safe value (`tjbench
/// -limitscans`). A progressive JPEG may carry thousands of tiny scans, each a pass over the
/// whole coefficient buffer ("Two Issues with the JPEG Standard", libjpeg-turbo); real
/// progressive files have about 10.
pub const MAX_SCANS: u32 = 500;

/// Decode limits, checked against the header before any pixel buffer is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most pixels (width × height) of an input (default 50,000,000).
    pub max_pixels: u64,
    /// Longest side of an input in pixels (default 16,384).
    pub max_side: u32,
    /// Most scans of a progressive JPEG (default 500, libjpeg-turbo's own safe value; set on
    /// every libjpeg-turbo decode).
    pub max_scans: u32,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_pixels: 50_000_000,
            max_side: 16_384,
            max_scans: MAX_SCANS,
        }
    }
}
