//! A hand-written SVG of backlog and tasks over time, one panel per scaler.

use std::fmt::Write;

use super::report::Report;

const WIDTH: f64 = 960.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 72.0;
const TOP: f64 = 70.0;
const PANEL: f64 = 130.0;
const GAP: f64 = 40.0;
const BOTTOM: f64 = 40.0;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A readable step for time ticks: about 6 ticks over `span` seconds.
fn tick_step(span: f64) -> f64 {
    const STEPS: [f64; 12] = [
        10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 10800.0, 21600.0,
    ];
    STEPS
        .iter()
        .copied()
        .find(|s| span / s <= 8.0)
        .unwrap_or(43_200.0)
}

fn time_label(t: f64) -> String {
    if t >= 3600.0 && t % 3600.0 == 0.0 {
        format!("{} h", t / 3600.0)
    } else if t >= 60.0 && t % 60.0 == 0.0 {
        format!("{} min", t / 60.0)
    } else {
        format!("{t} s")
    }
}

/// Renders the first phase's series of every scaler in the report.
pub fn render(report: &Report) -> String {
    let panels = report.scalers.len().max(1) as f64;
    let height = TOP + panels * PANEL + (panels - 1.0) * GAP + BOTTOM;
    let plot_w = WIDTH - LEFT - RIGHT;
    let end = report
        .scalers
        .iter()
        .flat_map(|s| s.series.last().map(|p| p.t))
        .fold(1.0_f64, f64::max);
    let max_backlog = report
        .scalers
        .iter()
        .flat_map(|s| s.series.iter().map(|p| p.backlog))
        .max()
        .unwrap_or(0)
        .max(1);
    let max_tasks = report
        .scalers
        .iter()
        .flat_map(|s| s.series.iter().map(|p| p.tasks))
        .max()
        .unwrap_or(0)
        .max(report.max_tasks)
        .max(1);
    let x = |t: f64| LEFT + t / end * plot_w;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="22" font-size="14" font-weight="bold">sluice simulate: {}</text>"#,
        escape(&report.workload)
    );
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="40" fill="#444">{} · start-up delay {:.0} s · <tspan fill="#d95f02">backlog (right axis, 0–{max_backlog})</tspan> · <tspan fill="#1b6ca8">tasks (left axis, 0–{max_tasks})</tspan></text>"##,
        escape(&report.description),
        report.startup_delay_seconds
    );
    let step = tick_step(end);
    for (i, scaler) in report.scalers.iter().enumerate() {
        let top = TOP + i as f64 * (PANEL + GAP);
        let bottom = top + PANEL;
        let yb = |b: u32| bottom - f64::from(b) / f64::from(max_backlog) * PANEL;
        let yt = |n: u32| bottom - f64::from(n) / f64::from(max_tasks) * PANEL;
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL}" fill="#fafafa" stroke="#bbb"/>"##
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" font-weight="bold">{} — p95 wait {:.1} s, {:.0} task-s</text>"#,
            LEFT,
            top - 6.0,
            scaler.scaler.name(),
            scaler.p95_wait_seconds,
            scaler.task_seconds
        );
        let mut t_tick = 0.0;
        while t_tick <= end {
            let _ = writeln!(
                out,
                r##"<line x1="{0:.1}" y1="{bottom}" x2="{0:.1}" y2="{1}" stroke="#999"/>"##,
                x(t_tick),
                bottom + 4.0
            );
            if i + 1 == report.scalers.len() {
                let _ = writeln!(
                    out,
                    r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                    x(t_tick),
                    bottom + 16.0,
                    time_label(t_tick)
                );
            }
            t_tick += step;
        }
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" text-anchor="end" fill="#1b6ca8">{max_tasks}</text><text x="{}" y="{bottom}" text-anchor="end" fill="#1b6ca8">0</text>"##,
            LEFT - 6.0,
            top + 10.0,
            LEFT - 6.0
        );
        let _ = writeln!(
            out,
            r##"<text x="{0}" y="{1}" fill="#d95f02">{max_backlog}</text><text x="{0}" y="{bottom}" fill="#d95f02">0</text>"##,
            LEFT + plot_w + 6.0,
            top + 10.0
        );
        if scaler.series.is_empty() {
            continue;
        }
        let mut area = format!("{:.1},{bottom:.1}", x(scaler.series[0].t));
        let mut tasks = String::new();
        let mut previous: Option<u32> = None;
        for p in &scaler.series {
            let _ = write!(area, " {:.1},{:.1}", x(p.t), yb(p.backlog));
            if let Some(n) = previous {
                let _ = write!(tasks, " {:.1},{:.1}", x(p.t), yt(n));
            }
            let _ = write!(tasks, " {:.1},{:.1}", x(p.t), yt(p.tasks));
            previous = Some(p.tasks);
        }
        if let Some(last) = scaler.series.last() {
            let _ = write!(area, " {:.1},{bottom:.1}", x(last.t));
        }
        let _ = writeln!(
            out,
            r##"<polygon points="{area}" fill="#d95f02" fill-opacity="0.35" stroke="#d95f02" stroke-width="0.8"/>"##
        );
        let _ = writeln!(
            out,
            r##"<polyline points="{}" fill="none" stroke="#1b6ca8" stroke-width="1.5"/>"##,
            tasks.trim_start()
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_ticks_are_readable() {
        assert_eq!(time_label(0.0), "0 s");
        assert_eq!(time_label(600.0), "10 min");
        assert_eq!(time_label(7200.0), "2 h");
        assert_eq!(tick_step(600.0), 120.0);
        assert_eq!(tick_step(86_400.0), 10_800.0);
        assert_eq!(escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }
}
