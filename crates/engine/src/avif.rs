//! AVIF encoding: the image as one AV1 intra frame (rav1e), 10-bit 4:4:4 BT.601 full range, in
//! a HEIF/MIAF container (`avif-serialize`), as cavif/ravif write it.
//!
//! The encoder hands back its reconstruction of the frame, which is exactly what an AV1
//! decoder produces, so the image is scored without an AV1 decoder in the engine.

use rav1e::prelude::{
    ChromaSampling, ColorDescription, ColorPrimaries, Config, Context, EncoderConfig,
    EncoderStatus, MatrixCoefficients, PixelRange, Rational, SceneDetectionSpeed, SpeedSettings,
    TransferCharacteristics, Tune,
};

use super::CompressError;

/// rav1e's speed preset (0 slowest … 10 fastest). On product photos at quality 60, scoring
/// included: 8 takes 1.26 s of CPU per megapixel; 10 takes 0.85 s for 7 % more bytes; 6 about
/// 2 s.
pub(super) const SPEED: u8 = 8;

/// 10-bit samples: AV1 compresses 8-bit sources better at 10 bits (fewer banding corrections).
const DEPTH: usize = 10;

/// BT.601 luma weights (ITU-R BT.601), the matrix the container declares.
const KR: f32 = 0.299;
const KB: f32 = 0.114;
const KG: f32 = 1.0 - KR - KB;
const MAX: f32 = ((1 << DEPTH) - 1) as f32;

/// An encoded AVIF and the 8-bit RGB a decoder shows for it.
pub(super) struct Encoded {
    pub bytes: Vec<u8>,
    pub decoded: Vec<u8>,
}

/// The AV1 quantizer (0–255) for a quality 1–100, on the scale cavif and ravif use, so a
/// quality means the same here as in those tools.
fn quantizer(quality: u8) -> usize {
    let q = f32::from(quality.clamp(1, 100)) / 100.0;
    let x = if q >= 0.82 {
        (1.0 - q) * 2.6
    } else if q > 0.25 {
        q.mul_add(-0.5, 1.0 - 0.125)
    } else {
        1.0 - q
    };
    (x * 255.0).round().clamp(0.0, 255.0) as usize
}

fn to_ycbcr(r: u8, g: u8, b: u8) -> [u16; 3] {
    let scale = MAX / 255.0;
    let (r, g, b) = (
        f32::from(r) * scale,
        f32::from(g) * scale,
        f32::from(b) * scale,
    );
    let y = KR * r + KG * g + KB * b;
    let half = (MAX * 0.5).round();
    let cb = (b - y) * (0.5 / (1.0 - KB)) + half;
    let cr = (r - y) * (0.5 / (1.0 - KR)) + half;
    [y, cb, cr].map(|v| v.round().clamp(0.0, MAX) as u16)
}

fn to_rgb(y: u16, cb: u16, cr: u16) -> [u8; 3] {
    let half = (MAX * 0.5).round();
    let (y, cb, cr) = (f32::from(y), f32::from(cb) - half, f32::from(cr) - half);
    let r = y + 2.0 * (1.0 - KR) * cr;
    let b = y + 2.0 * (1.0 - KB) * cb;
    let g = (y - KR * r - KB * b) / KG;
    let scale = 255.0 / MAX;
    [r, g, b].map(|v| (v * scale).round().clamp(0.0, 255.0) as u8)
}

fn speed_settings() -> SpeedSettings {
    let mut settings = SpeedSettings::from_preset(SPEED);
    // One still frame: no lookahead, references or scene detection to pay for.
    settings.multiref = false;
    settings.rdo_lookahead_frames = 1;
    settings.scene_detection_mode = SceneDetectionSpeed::None;
    settings
}

/// Encodes 8-bit RGB at `quality` (1–100, the cavif scale) on the calling thread.
///
/// # Errors
/// [`CompressError::Encode`] when rav1e refuses the configuration or fails.
pub(super) fn encode(
    rgb: &[u8],
    width: u32,
    height: u32,
    quality: u8,
) -> Result<Encoded, CompressError> {
    let err = |e: &dyn std::fmt::Display| CompressError::Encode(format!("AV1: {e}"));
    let (w, h) = (width as usize, height as usize);
    if rgb.len() != w * h * 3 || w == 0 || h == 0 {
        return Err(err(&"pixel buffer size mismatch"));
    }
    let quantizer = quantizer(quality);
    let config = EncoderConfig {
        width: w,
        height: h,
        time_base: Rational::new(1, 1),
        bit_depth: DEPTH,
        chroma_sampling: ChromaSampling::Cs444,
        pixel_range: PixelRange::Full,
        color_description: Some(ColorDescription {
            color_primaries: ColorPrimaries::BT709,
            transfer_characteristics: TransferCharacteristics::SRGB,
            matrix_coefficients: MatrixCoefficients::BT601,
        }),
        still_picture: true,
        quantizer,
        min_quantizer: u8::try_from(quantizer).unwrap_or(u8::MAX),
        tune: Tune::Psychovisual,
        speed_settings: speed_settings(),
        ..EncoderConfig::default()
    };
    let mut context: Context<u16> = Config::new()
        .with_encoder_config(config)
        .with_threads(1)
        .new_context()
        .map_err(|e| err(&e))?;
    let mut frame = context.new_frame();
    {
        let [yp, up, vp] = &mut frame.planes;
        let rows = yp
            .rows_iter_mut()
            .zip(up.rows_iter_mut())
            .zip(vp.rows_iter_mut())
            .take(h);
        for (((y, u), v), src) in rows.zip(rgb.chunks_exact(w * 3)) {
            for (i, px) in src.chunks_exact(3).enumerate() {
                let [l, cb, cr] = to_ycbcr(px[0], px[1], px[2]);
                y[i] = l;
                u[i] = cb;
                v[i] = cr;
            }
        }
    }
    context.send_frame(frame).map_err(|e| err(&e))?;
    context.flush();
    let packet = loop {
        match context.receive_packet() {
            Ok(packet) => break packet,
            Err(EncoderStatus::Encoded) => {}
            Err(e) => return Err(err(&e)),
        }
    };
    let rec = packet
        .rec
        .ok_or_else(|| err(&"the encoder returned no reconstruction"))?;
    let mut decoded = Vec::with_capacity(w * h * 3);
    let [yp, up, vp] = &rec.planes;
    for ((y, u), v) in yp
        .rows_iter()
        .zip(up.rows_iter())
        .zip(vp.rows_iter())
        .take(h)
    {
        for ((&l, &cb), &cr) in y.iter().zip(u).zip(v).take(w) {
            decoded.extend_from_slice(&to_rgb(l, cb, cr));
        }
    }
    let bytes = avif_serialize::Aviffy::new()
        .set_matrix_coefficients(avif_serialize::constants::MatrixCoefficients::Bt601)
        .set_transfer_characteristics(avif_serialize::constants::TransferCharacteristics::Srgb)
        .set_color_primaries(avif_serialize::constants::ColorPrimaries::Bt709)
        .set_full_color_range(true)
        .to_vec(&packet.data, None, width, height, DEPTH as u8);
    Ok(Encoded { bytes, decoded })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_conversion_round_trips_within_one_level() {
        for rgb in [
            [0, 0, 0],
            [255, 255, 255],
            [200, 30, 90],
            [12, 250, 7],
            [128, 128, 128],
        ] {
            let [y, cb, cr] = to_ycbcr(rgb[0], rgb[1], rgb[2]);
            let back = to_rgb(y, cb, cr);
            for c in 0..3 {
                assert!(back[c].abs_diff(rgb[c]) <= 1, "{rgb:?} → {back:?}");
            }
        }
    }

    #[test]
    fn quality_maps_onto_the_cavif_quantizer_scale() {
        assert_eq!(quantizer(100), 0);
        assert!(quantizer(1) >= 250);
        assert!(quantizer(50) > quantizer(80));
    }
}
