//! `--html FILE`: one self-contained page (inline SVG, no scripts, nothing
//! fetched) with throughput and latency over time and the latency
//! percentile spectrum.

use std::fmt::Write;

use crate::report::Report;

const W: f64 = 760.0;
const H: f64 = 260.0;
const PAD_L: f64 = 70.0;
const PAD_B: f64 = 40.0;
const PAD_T: f64 = 20.0;
const PAD_R: f64 = 20.0;
const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A line chart of `series` (name, points); `log_x` maps x to
/// -log10(1 - x/100) (a percentile axis).
fn chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
    log_x: bool,
) -> String {
    let tx = |x: f64| {
        if log_x {
            -(1.0 - (x / 100.0).min(0.999_999)).log10()
        } else {
            x
        }
    };
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(x, y)| (tx(*x), *y)))
        .collect();
    let mut s = String::new();
    let _ = write!(
        s,
        "<figure><figcaption>{}</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\">",
        esc(title)
    );
    if pts.is_empty() {
        s.push_str("<text x=\"20\" y=\"40\">no data</text></svg></figure>");
        return s;
    }
    let (x0, x1) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.0), a.1.max(p.0)));
    let y1 = pts.iter().fold(0.0f64, |a, p| a.max(p.1)).max(1e-9) * 1.05;
    let (x1, x0) = if x1 > x0 { (x1, x0) } else { (x0 + 1.0, x0) };
    let px = |x: f64| PAD_L + (x - x0) / (x1 - x0) * (W - PAD_L - PAD_R);
    let py = |y: f64| H - PAD_B - y / y1 * (H - PAD_B - PAD_T);
    // Axes, grid and labels.
    let _ = write!(
        s,
        "<rect x=\"{PAD_L}\" y=\"{PAD_T}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#888\"/>",
        W - PAD_L - PAD_R,
        H - PAD_B - PAD_T
    );
    for i in 0..=4 {
        let y = y1 * i as f64 / 4.0;
        let _ = write!(
            s,
            "<line x1=\"{PAD_L}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/><text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
            W - PAD_R,
            py(y),
            py(y),
            PAD_L - 4.0,
            py(y) + 4.0,
            short(y)
        );
    }
    let ticks: Vec<(f64, String)> = if log_x {
        [0.0, 90.0, 99.0, 99.9, 99.99, 99.999]
            .iter()
            .map(|p| (tx(*p), format!("{p}%")))
            .filter(|(x, _)| *x <= x1)
            .collect()
    } else {
        (0..=5)
            .map(|i| {
                let x = x0 + (x1 - x0) * i as f64 / 5.0;
                (x, short(x))
            })
            .collect()
    };
    for (x, label) in ticks {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{}</text>",
            px(x),
            H - PAD_B + 14.0,
            esc(&label)
        );
    }
    let _ = write!(
        s,
        "<text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\">{}</text><text x=\"14\" y=\"{}\" font-size=\"12\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">{}</text>",
        (PAD_L + W - PAD_R) / 2.0,
        H - 6.0,
        esc(x_label),
        H / 2.0,
        H / 2.0,
        esc(y_label)
    );
    for (i, (name, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(tx(*x)), py(*y)))
            .collect();
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/><text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"{color}\">{}</text>",
            path.join(" "),
            PAD_L + 8.0 + 150.0 * i as f64,
            PAD_T + 14.0,
            esc(name)
        );
    }
    s.push_str("</svg></figure>");
    s
}

fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The page for `r`.
pub fn page(r: &Report) -> String {
    let secs = |f: fn(&crate::report::Second) -> f64| -> Vec<(f64, f64)> {
        r.series
            .iter()
            .map(|s| ((s.second + 1) as f64, f(s)))
            .collect()
    };
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>sluice loadgen: {}</title><style>body{{font-family:sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}figure{{margin:16px 0}}figcaption{{font-weight:bold}}pre{{background:#f6f6f6;padding:8px}}</style></head><body>",
        esc(&r.topic)
    );
    let _ = write!(
        s,
        "<h1>sluice loadgen</h1><p>topic {} on {}; {} cores, {}, kernel {}, sluice {}</p>",
        esc(&r.topic),
        esc(&r.params.bootstrap),
        r.host.cores,
        esc(&r.host.cpu_model),
        esc(&r.host.kernel),
        esc(&r.host.sluice_version),
    );
    s.push_str("<table><tr><th></th><th>messages</th><th>bytes</th><th>msg/s</th><th>MB/s</th><th>errors</th></tr>");
    for (name, side) in [("produce", &r.produce), ("consume", &r.consume)] {
        let errors: u64 = side.errors.values().sum();
        let _ = write!(
            s,
            "<tr><th>{name}</th><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.1}</td><td>{errors}</td></tr>",
            side.messages, side.bytes, side.msgs_per_sec, side.mb_per_sec
        );
    }
    s.push_str("</table><table style=\"margin-top:12px\"><tr><th>latency (µs)</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>p99.99</th><th>max</th></tr>");
    for (name, p) in [
        ("produce", &r.produce_latency_us),
        ("end to end", &r.end_to_end_latency_us),
    ] {
        let _ = write!(
            s,
            "<tr><th>{name}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            p.p50, p.p90, p.p99, p.p999, p.p9999, p.max
        );
    }
    s.push_str("</table>");
    s.push_str(&chart(
        "Throughput",
        "second",
        "MB/s",
        &[
            ("produce", secs(|s| s.produce_mb_per_sec)),
            ("consume", secs(|s| s.consume_mb_per_sec)),
        ],
        false,
    ));
    s.push_str(&chart(
        "Latency over time",
        "second",
        "µs",
        &[
            ("produce p50", secs(|s| s.produce_p50_us as f64)),
            ("produce p99", secs(|s| s.produce_p99_us as f64)),
            ("end-to-end p50", secs(|s| s.end_to_end_p50_us as f64)),
            ("end-to-end p99", secs(|s| s.end_to_end_p99_us as f64)),
        ],
        false,
    ));
    let spec = |v: &[(f64, u64)]| v.iter().map(|(p, us)| (*p, *us as f64)).collect::<Vec<_>>();
    s.push_str(&chart(
        "Latency by percentile",
        "percentile",
        "µs",
        &[
            ("produce", spec(&r.produce_spectrum)),
            ("end to end", spec(&r.end_to_end_spectrum)),
        ],
        true,
    ));
    let _ = writeln!(
        s,
        "<h2>Parameters</h2><pre>{}</pre></body></html>",
        esc(&serde_json::to_string_pretty(&r.params).unwrap_or_default())
    );
    s
}
