//! `pixpress-ssimulacra2`: scores pairs of raw 8-bit sRGB RGB files with the engine's
//! SSIMULACRA2 (the same metric and code as the status API's scores), for studies that encode
//! with other tools (`bench/jpeg_encoders.py`).
//!
//! Reads lines `<width> <height> <reference.rgb> <distorted.rgb>` on stdin (each file exactly
//! width×height×3 bytes) and answers each with one line: the score, or `none` when the pair
//! cannot be scored (sizes differ, over 4 MP, a side under 8 pixels). The reference is
//! prepared once and reused while consecutive lines name the same file.

use std::io::{BufRead as _, Write as _};

use anyhow::Context as _;
use pixpress_engine::ScoreReference;

fn main() -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    let mut current: Option<(String, Option<ScoreReference>)> = None;
    for line in stdin.lock().lines() {
        let line = line?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [width, height, reference, distorted] = fields[..] else {
            anyhow::bail!("expected `<width> <height> <reference.rgb> <distorted.rgb>`: {line}");
        };
        let (width, height): (u32, u32) = (width.parse()?, height.parse()?);
        if current.as_ref().is_none_or(|(path, _)| path != reference) {
            let rgb = std::fs::read(reference).with_context(|| format!("reading {reference}"))?;
            current = Some((
                reference.to_owned(),
                ScoreReference::new(&rgb, width, height),
            ));
        }
        let decoded = std::fs::read(distorted).with_context(|| format!("reading {distorted}"))?;
        let score = current
            .as_ref()
            .and_then(|(_, r)| r.as_ref())
            .and_then(|r| r.compare(&decoded));
        match score {
            Some(score) => writeln!(stdout, "{score:.4}")?,
            None => writeln!(stdout, "none")?,
        }
        stdout.flush()?;
    }
    Ok(())
}
