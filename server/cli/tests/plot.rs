//! `fedcsg plot` with the real binary on the committed summary of a real 10-round Fashion-MNIST
//! job (docs/example-job.json): a PNG of the right size with drawn (non-blank) content in each
//! quarter of the picture, and refusals that say what is wrong.

use std::path::PathBuf;
use std::process::Command;

fn fedcsg() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fedcsg"))
}

fn example_summary() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/example-job.json")
}

/// Decodes an 8-bit RGB(A) PNG: (width, height, RGB pixels row by row).
fn decode(path: &std::path::Path) -> (u32, u32, Vec<[u8; 3]>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected colour type {other:?}"),
    };
    let pixels = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    (info.width, info.height, pixels)
}

#[test]
fn a_summary_becomes_a_drawn_png() {
    let out = std::env::temp_dir().join(format!("fedcsg-plot-test-{}.png", std::process::id()));
    let run = Command::new(fedcsg())
        .arg("plot")
        .arg(example_summary())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stdout).contains("plot of 10 rounds"));
    let (width, height, pixels) = decode(&out);
    let _ = std::fs::remove_file(&out);
    assert_eq!((width, height), (1400, 1000));
    let ink = |p: &[u8; 3]| p.iter().any(|c| *c < 200);
    // Every quarter (one chart each) has drawn pixels, and none is a filled block.
    for (qx, qy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
        let (x0, y0) = (qx * width / 2, 60 + qy * (height - 60) / 2);
        let (w, h) = (width / 2, (height - 60) / 2);
        let mut drawn = 0usize;
        for y in y0..y0 + h {
            for x in x0..x0 + w {
                drawn += usize::from(ink(&pixels[(y * width + x) as usize]));
            }
        }
        let fraction = drawn as f64 / (w * h) as f64;
        assert!(
            (0.01..0.5).contains(&fraction),
            "quarter ({qx}, {qy}) has {:.1}% drawn pixels",
            100.0 * fraction
        );
    }
    // The lines are in colour (the series), not only black axes and text.
    let coloured = pixels
        .iter()
        .filter(|[r, g, b]| {
            (*r as i32 - *b as i32).abs() > 100 || (*g as i32 - *b as i32).abs() > 100
        })
        .count();
    assert!(coloured > 2_000, "only {coloured} coloured pixels");
}

#[test]
fn bad_sources_and_outputs_are_explained() {
    let run = |args: &[&str]| {
        let out = Command::new(fedcsg()).args(args).output().unwrap();
        assert!(!out.status.success(), "fedcsg {args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let summary = example_summary();
    let summary = summary.to_str().unwrap();
    let err = run(&["plot", summary, "--out", "x.jpg"]);
    assert!(err.contains(".png or .svg"), "{err}");
    let err = run(&["plot", "missing-summary.json", "--out", "x.png"]);
    assert!(err.contains("no such file"), "{err}");
    let not_a_summary =
        std::env::temp_dir().join(format!("fedcsg-plot-bad-{}.json", std::process::id()));
    std::fs::write(&not_a_summary, "{\"jobs\": []}").unwrap();
    let err = run(&["plot", not_a_summary.to_str().unwrap(), "--out", "x.png"]);
    let _ = std::fs::remove_file(&not_a_summary);
    assert!(err.contains("no \"rounds\" array"), "{err}");
}
