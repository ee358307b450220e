//! SVG line charts of training curves (loss or validation NDCG per epoch,
//! one line per job), drawn with plotters' SVG backend: text is left to the
//! SVG viewer, so no font files are needed.

use plotters::prelude::*;

/// One line: a label and (epoch, value) points in epoch order.
pub struct Series {
    pub label: String,
    pub points: Vec<(u32, f64)>,
}

const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// An SVG document with one line per series.
pub fn line_chart_svg(series: &[Series], title: &str, y_label: &str, size: (u32, u32)) -> Result<String, String> {
    let finite = |v: &f64| v.is_finite();
    let points = series.iter().flat_map(|s| s.points.iter());
    let max_epoch = points.clone().map(|p| p.0).max().unwrap_or(1).max(1);
    let (mut low, mut high) =
        points.map(|p| p.1).filter(finite).fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
    if !low.is_finite() {
        (low, high) = (0.0, 1.0);
    }
    let pad = ((high - low) * 0.05).max(1e-6);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(1u32..max_epoch.max(2), (low - pad)..(high + pad))
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(y_label)
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, s) in series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let line: Vec<(u32, f64)> = s.points.iter().copied().filter(|p| p.1.is_finite()).collect();
            chart
                .draw_series(LineSeries::new(line, colour.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(s.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_polyline_and_one_legend_entry_per_series() {
        let series = vec![
            Series { label: "normalised".into(), points: vec![(1, 8.0), (2, 7.5), (3, 7.2)] },
            Series { label: "plain & <raw>".into(), points: vec![(1, 8.2), (2, 8.1), (3, f64::NAN)] },
        ];
        let svg = line_chart_svg(&series, "loss", "train loss", (640, 400)).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..60.min(svg.len())]);
        assert!(svg.contains("normalised"));
        assert!(svg.contains("plain &amp; &lt;raw&gt;"), "labels are escaped");
        // per series a data line (NaN points left out) and a legend swatch
        let lines: Vec<&str> =
            svg.lines().filter(|l| l.contains("<polyline") && l.contains("stroke-width=\"2\"")).collect();
        assert_eq!(lines.len(), 4, "{svg}");
        let points = |l: &str| {
            l.split("points=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("").split_whitespace().count()
        };
        assert_eq!((points(lines[0]), points(lines[1])), (3, 2), "{lines:?}");
    }

    #[test]
    fn empty_input_still_draws_axes() {
        let svg = line_chart_svg(&[], "nothing yet", "loss", (300, 200)).unwrap();
        assert!(svg.contains("epoch"));
    }
}
