//! Timelines as SVG pictures: one lane per host thread, one per command queue, drawn with plotters.

use plotters::prelude::*;
use std::path::Path;
use ttdrv::profile::{Lane, Span};

/// What to draw.
pub struct Timeline<'a> {
    /// Title line.
    pub title: String,
    /// Caption under the picture (the measured numbers and their units); one line per `\n`.
    pub subtitle: String,
    /// Spans to draw (those outside the window are skipped).
    pub spans: &'a [Span],
    /// Time window, profiler ns.
    pub window: (u64, u64),
    /// Command queues, so empty queues still get a lane.
    pub queues: u16,
}

/// Host time the thread was off its core past a framework deadline (drawn after the framework span, never over it).
const PREEMPTED: RGBColor = RGBColor(0xF4, 0xC7, 0xC3);

fn color(s: &Span) -> RGBColor {
    match (s.cat, &*s.name) {
        ("framework", _) => RGBColor(0xB8, 0xB8, 0xB8),
        ("preempted", _) => PREEMPTED,
        ("wait", _) => RGBColor(0xF0, 0xE0, 0x90),
        ("api", _) => RGBColor(0x4C, 0x72, 0xB0),
        (_, "write") => RGBColor(0xC4, 0x4E, 0x52),
        (_, "read") => RGBColor(0x2C, 0xA6, 0xA4),
        (_, n) if n.contains("matmul") => RGBColor(0xDD, 0x84, 0x52),
        (_, n) if n.contains("copy") => RGBColor(0x93, 0x78, 0x60),
        ("compute", _) => RGBColor(0x81, 0x72, 0xB3),
        ("event", _) => RGBColor(0x30, 0x30, 0x30),
        _ => RGBColor(0x70, 0x90, 0x70),
    }
}

/// Renders the timeline to `path` (SVG).
pub fn render(t: &Timeline<'_>, path: &Path) -> Result<(), String> {
    let (w0, w1) = t.window;
    if w1 <= w0 {
        return Err("empty time window".into());
    }
    let mut lanes: Vec<Lane> =
        t.spans.iter().map(|s| s.lane.clone()).filter(|l| matches!(l, Lane::Host { .. })).collect();
    lanes.sort();
    lanes.dedup();
    lanes.extend((0..t.queues).map(Lane::Queue));
    let lane_name = |l: &Lane| match l {
        Lane::Host { name, .. } if name.as_ref() == "main" => "host".to_string(),
        Lane::Host { name, .. } => format!("host: {name}"),
        Lane::Queue(q) => format!("CQ {q}"),
    };
    let n = lanes.len() as f64;
    let height = 140 + 60 * lanes.len() as u32 + 16 * t.subtitle.lines().count().saturating_sub(1) as u32;
    let root = SVGBackend::new(path, (1400, height)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| format!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let span_us = (w1 - w0) as f64 / 1e3;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{}\n", t.title), ("sans-serif", 20))
        .margin(12)
        .margin_left(110)
        .x_label_area_size(36)
        .y_label_area_size(0)
        .build_cartesian_2d(0f64..span_us, 0f64..n)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .x_desc("time (µs)")
        .x_labels(12)
        .draw()
        .map_err(|e| err(&e))?;
    let lane_of = |l: &Lane| lanes.iter().position(|x| x == l).unwrap_or(0) as f64;
    let x = |ns: u64| (ns.clamp(w0, w1) - w0) as f64 / 1e3;
    let visible: Vec<&Span> = t.spans.iter().filter(|s| s.end_ns > w0 && s.start_ns < w1).collect();
    // Replays first, as outlines behind the ops they contain.
    for s in visible.iter().filter(|s| s.cat == "trace") {
        let y = n - 1.0 - lane_of(&s.lane);
        chart
            .draw_series([Rectangle::new(
                [(x(s.start_ns), y + 0.08), (x(s.end_ns), y + 0.92)],
                RGBColor(0x60, 0x30, 0x90).stroke_width(2),
            )])
            .map_err(|e| err(&e))?;
    }
    for s in visible.iter().filter(|s| s.cat != "trace") {
        let y = n - 1.0 - lane_of(&s.lane);
        let (a, b) = (x(s.start_ns), x(s.end_ns).max(x(s.start_ns) + span_us * 0.0008));
        let (lo, hi) = if s.cat == "event" { (y + 0.35, y + 0.65) } else { (y + 0.15, y + 0.85) };
        chart.draw_series([Rectangle::new([(a, lo), (b, hi)], color(s).filled())]).map_err(|e| err(&e))?;
        if (b - a) > span_us * 0.045 {
            chart
                .draw_series([Text::new(
                    s.name.to_string(),
                    (a + span_us * 0.002, y + 0.62),
                    ("sans-serif", 11).into_font().color(&WHITE),
                )])
                .map_err(|e| err(&e))?;
        }
    }
    for l in &lanes {
        let y = n - 1.0 - lane_of(l);
        let (px, py) = chart.backend_coord(&(0.0, y + 0.5));
        root.draw(&Text::new(lane_name(l), (px - 100, py - 7), ("sans-serif", 15))).map_err(|e| err(&e))?;
    }
    let lines: Vec<&str> = t.subtitle.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let y = height as i32 - 22 - 16 * (lines.len() - 1 - i) as i32;
        root.draw(&Text::new(line.to_string(), (20, y), ("sans-serif", 13))).map_err(|e| err(&e))?;
    }
    let legend = [
        ("host API call", RGBColor(0x4C, 0x72, 0xB0)),
        ("framework cost (modelled)", RGBColor(0xB8, 0xB8, 0xB8)),
        ("host thread preempted", PREEMPTED),
        ("host waits", RGBColor(0xF0, 0xE0, 0x90)),
        ("write", RGBColor(0xC4, 0x4E, 0x52)),
        ("read", RGBColor(0x2C, 0xA6, 0xA4)),
        ("matmul", RGBColor(0xDD, 0x84, 0x52)),
        ("copy", RGBColor(0x93, 0x78, 0x60)),
        ("eltwise", RGBColor(0x81, 0x72, 0xB3)),
        ("event", RGBColor(0x30, 0x30, 0x30)),
    ];
    let mut lx = 20;
    for (name, c) in legend {
        root.draw(&Rectangle::new([(lx, 40), (lx + 12, 52)], c.filled())).map_err(|e| err(&e))?;
        root.draw(&Text::new(name, (lx + 16, 40), ("sans-serif", 12))).map_err(|e| err(&e))?;
        lx += 18 + 7 * name.len() as i32 + 14;
    }
    root.draw(&Rectangle::new([(lx, 40), (lx + 12, 52)], RGBColor(0x60, 0x30, 0x90).stroke_width(2)))
        .map_err(|e| err(&e))?;
    root.draw(&Text::new("trace replay", (lx + 16, 40), ("sans-serif", 12))).map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
