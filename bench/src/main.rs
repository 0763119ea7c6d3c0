//! `pixpress-bench`: runs the compression engine (single thread, as one Lambda vCPU would)
//! over images and prints images/s, MP/s, CPU ms per image and per megapixel, bytes in → out,
//! the SSIMULACRA2 scores reached (median, range) and peak RSS, for one output format and
//! quality mode.
//!
//! ```sh
//! cargo run --release -p pixpress-bench -- ~/.cache/pixpress-corpus/product100
//! cargo run --release -p pixpress-bench -- --format avif --quality auto:70 product100/
//! cargo run --release -p pixpress-bench -- --list product100.txt --out /tmp/out --json
//! ```
//!
//! Each image is read from disk and compressed inside the timed loop (reading is part of what
//! every compared tool does); outputs are written after timing when `--out` is given.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use pixpress_domain::model::{OutputFormat, OutputSpec, Quality};
use pixpress_engine::{DecodeLimits, compress};

/// Benchmark the pixpress compression engine.
#[derive(Debug, Parser)]
struct Args {
    /// Image files or directories (every file inside, sorted).
    paths: Vec<PathBuf>,
    /// A file listing one image path per line.
    #[arg(long)]
    list: Option<PathBuf>,
    /// Output format: jpeg, webp or avif.
    #[arg(long, default_value = "jpeg")]
    format: OutputFormat,
    /// Encoder quality 1–100 or `auto:<score>`; the format's default when absent.
    #[arg(long)]
    quality: Option<Quality>,
    /// Longest output side in pixels.
    #[arg(long)]
    max_dimension: Option<u32>,
    /// Leave images unscored (a fixed quality only), as Pillow and libvips do not score.
    #[arg(long)]
    no_score: bool,
    /// Passes over the images (figures are for all passes together).
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Write outputs here as `<file stem>.<extension>` (after timing).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn images(args: &Args) -> anyhow::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    if let Some(list) = &args.list {
        let text =
            std::fs::read_to_string(list).with_context(|| format!("reading {}", list.display()))?;
        paths.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(PathBuf::from),
        );
    }
    for path in &args.paths {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            entries.sort();
            paths.extend(entries);
        } else {
            paths.push(path.clone());
        }
    }
    anyhow::ensure!(!paths.is_empty(), "no images given");
    Ok(paths)
}

/// CPU time (user + system) of this process, from `/proc/self/stat` (fields 14 and 15, in
/// clock ticks of 1/100 s, the Linux `USER_HZ`).
fn cpu_time() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // The command name (field 2) may contain spaces; fields after it follow ')'.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some(utime + stime)
        });
    Duration::from_millis(ticks.unwrap_or(0) * 10)
}

/// Peak resident set size in bytes (`VmHWM`).
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
        })
        .map_or(0, |kb| kb * 1024)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let paths = images(&args)?;
    let spec = OutputSpec {
        score: !args.no_score,
        ..OutputSpec::with_format(args.format, args.quality, args.max_dimension)
            .map_err(anyhow::Error::msg)?
    };
    let mut per_image: Vec<serde_json::Value> = Vec::new();
    let mut scores: Vec<f64> = Vec::new();
    let limits = DecodeLimits::default();
    let mut outputs: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    let (mut ok, mut failed, mut kept) = (0u64, 0u64, 0u64);
    let (mut bytes_in, mut bytes_out, mut pixels) = (0u64, 0u64, 0u64);
    let mut errors: std::collections::BTreeMap<&'static str, u64> = Default::default();
    let cpu_start = cpu_time();
    let start = Instant::now();
    for round in 0..args.rounds.max(1) {
        for path in &paths {
            let input =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let began = Instant::now();
            let result = compress(&input, &spec, &limits);
            let elapsed_ms = began.elapsed().as_secs_f64() * 1000.0;
            match result {
                Ok(out) => {
                    ok += 1;
                    kept += u64::from(out.kept_original);
                    bytes_in += input.len() as u64;
                    bytes_out += out.bytes.len() as u64;
                    pixels += u64::from(out.width) * u64::from(out.height);
                    if round == 0 {
                        scores.extend(out.score);
                        per_image.push(serde_json::json!({
                            "path": path,
                            "bytes_in": input.len(),
                            "bytes_out": out.bytes.len(),
                            "pixels": u64::from(out.width) * u64::from(out.height),
                            "quality": out.quality,
                            "score": out.score,
                            "kept_original": out.kept_original,
                            "ms": elapsed_ms,
                        }));
                    }
                    if round == 0 && args.out.is_some() {
                        outputs.push((path.clone(), out.bytes));
                    }
                }
                Err(e) => {
                    failed += 1;
                    *errors.entry(e.code()).or_default() += 1;
                }
            }
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = (cpu_time() - cpu_start).as_secs_f64();
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)?;
        for (path, bytes) in &outputs {
            let stem = Path::new(path)
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("image");
            std::fs::write(
                dir.join(format!("{stem}.{}", spec.format.extension())),
                bytes,
            )?;
        }
    }
    let n = (ok + failed).max(1) as f64;
    scores.sort_by(f64::total_cmp);
    let median = scores.get(scores.len() / 2).copied();
    let report = serde_json::json!({
        "tool": "pixpress",
        "format": spec.format.name(),
        "quality": spec.quality_text(),
        "score_median": median,
        "score_min": scores.first(),
        "score_max": scores.last(),
        "cpu_ms_per_mp": cpu * 1000.0 / (pixels as f64 / 1e6).max(1e-9),
        "per_image": per_image,
        "images": ok + failed,
        "ok": ok,
        "failed": failed,
        "errors": errors,
        "kept_original": kept,
        "wall_s": wall,
        "cpu_s": cpu,
        "images_per_s": n / wall,
        "mp_per_s": pixels as f64 / 1e6 / wall,
        "cpu_ms_per_image": cpu * 1000.0 / n,
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "peak_rss_bytes": peak_rss(),
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "{} {}: {} images ({} failed, {} kept original) in {:.2} s: {:.1} images/s, {:.1} MP/s, {:.1} ms CPU per image\nbytes: {} in → {} out ({:.1}%)\nSSIMULACRA2: median {:.2}, {:.2}–{:.2}\npeak RSS: {:.1} MB",
            spec.format.name(),
            spec.quality_text(),
            ok + failed,
            failed,
            kept,
            wall,
            n / wall,
            pixels as f64 / 1e6 / wall,
            cpu * 1000.0 / n,
            bytes_in,
            bytes_out,
            bytes_out as f64 * 100.0 / bytes_in.max(1) as f64,
            median.unwrap_or(f64::NAN),
            scores.first().copied().unwrap_or(f64::NAN),
            scores.last().copied().unwrap_or(f64::NAN),
            peak_rss() as f64 / 1e6,
        );
        for (code, count) in &errors {
            println!("  {code}: {count}");
        }
    }
    Ok(())
}
