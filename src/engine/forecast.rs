//! Lead time: the load expected when a pod asked for now would be ready.
//!
//! A least-squares line through the recent window of one metric's totals, extrapolated
//! `lead` seconds ahead. Only rises are forecast (a fall never shrinks the fleet early), and the
//! forecast is bounded by `max_growth` times the current value, so one noisy sample cannot
//! order a fleet. After a gap in the data the trend starts again one window later: the
//! readings right after a gap are often partial (a restarted Prometheus has no `rate()` for a
//! series until two fresh samples), and their climb back to the real value is not a surge.

use serde::{Deserialize, Serialize};

/// Recent `(time, total)` points of one metric.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub points: Vec<(f64, f64)>,
    /// Points before this time are not trusted (set by a gap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_until: Option<f64>,
}

/// How far back the noise of a series is measured: ten minutes of readings before the trend
/// window.
pub const NOISE_WINDOW_SECONDS: f64 = 600.0;
/// A rise counts when it exceeds this many times the recent noise (its standard deviation): the
/// rise between two independent averages of noise has √2 times its spread, so 5σ is about 3.5σ
/// of that: rare enough for a whole day of readings.
pub const NOISE_MULTIPLE: f64 = 5.0;

impl Series {
    /// A run without data: forget the trend and distrust the next `window` seconds.
    pub fn gap(&mut self, at: f64, window: f64) {
        self.points.clear();
        self.settle_until = Some(at + window);
    }

    /// Adds a point and forgets those older than the trend `window` and the noise window.
    pub fn push(&mut self, at: f64, value: f64, window: f64) {
        if self.settle_until.is_some_and(|s| at < s) {
            return;
        }
        if self.points.last().is_some_and(|(t, _)| *t >= at) {
            self.points.retain(|(t, _)| *t < at);
        }
        self.points.push((at, value));
        let keep = window + NOISE_WINDOW_SECONDS;
        self.points.retain(|(t, _)| *t >= at - keep);
    }

    /// The points of the last `window` seconds.
    fn recent(&self, window: f64) -> &[(f64, f64)] {
        let Some((last, _)) = self.points.last() else {
            return &[];
        };
        let from = self.points.partition_point(|(t, _)| *t < last - window);
        &self.points[from..]
    }

    /// Standard deviation of the readings before the trend window (at least three of them).
    pub fn noise(&self, window: f64) -> Option<f64> {
        let older = &self.points[..self.points.len() - self.recent(window).len()];
        if older.len() < 3 {
            return None;
        }
        let n = older.len() as f64;
        let mean = older.iter().map(|p| p.1).sum::<f64>() / n;
        Some((older.iter().map(|p| (p.1 - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt())
    }

    /// Slope in units per second over the last `window` seconds, if it holds enough points over
    /// enough time (at least three points spanning a third of the window).
    pub fn slope(&self, window: f64) -> Option<f64> {
        let pts = self.recent(window);
        let n = pts.len();
        let (first, last) = (pts.first()?.0, pts.last()?.0);
        if n < 3 || last - first < window / 3.0 {
            return None;
        }
        let nf = n as f64;
        let mt = pts.iter().map(|p| p.0).sum::<f64>() / nf;
        let mv = pts.iter().map(|p| p.1).sum::<f64>() / nf;
        let (mut sxy, mut sxx) = (0.0, 0.0);
        for (t, v) in pts {
            sxy += (t - mt) * (v - mv);
            sxx += (t - mt) * (t - mt);
        }
        (sxx > 0.0).then(|| sxy / sxx)
    }

    /// How many standard errors the fitted slope is above zero (infinite for a perfect line).
    pub fn significance(&self, window: f64) -> Option<f64> {
        let slope = self.slope(window)?;
        let pts = self.recent(window);
        let n = pts.len() as f64;
        let mt = pts.iter().map(|p| p.0).sum::<f64>() / n;
        let mv = pts.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = pts.iter().map(|(t, _)| (t - mt) * (t - mt)).sum();
        let residual: f64 = pts
            .iter()
            .map(|(t, v)| {
                let e = v - (mv + slope * (t - mt));
                e * e
            })
            .sum();
        let se = (residual / (n - 2.0) / sxx).sqrt();
        Some(if se > 0.0 {
            slope / se
        } else {
            f64::INFINITY * slope.signum()
        })
    }

    /// The value expected `lead` seconds after the last point, if the trend rises significantly:
    /// its slope `significance` standard errors above flat (and Student's t for the points at
    /// hand), and its rise over the window above [`NOISE_MULTIPLE`] times the noise of the
    /// readings before it (the readings of a `rate()` overlap, so a wandering average of noise
    /// can pass a t-test; it cannot climb far above its own spread). The rise forecast is at
    /// most the rise observed over the window, and the forecast at most `max_growth` times the
    /// current value.
    pub fn forecast(
        &self,
        lead: f64,
        window: f64,
        max_growth: f64,
        significance: f64,
    ) -> Option<f64> {
        let slope = self.slope(window)?;
        let pts = self.recent(window);
        let (_, current) = *pts.last()?;
        let df = pts.len().saturating_sub(2);
        if slope <= 0.0
            || current <= 0.0
            || self.significance(window)? < significance.max(t_critical(df))
        {
            return None;
        }
        let lo = pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let hi = pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
        let span = pts.last()?.0 - pts.first()?.0;
        if self
            .noise(window)
            .is_some_and(|sd| slope * span <= NOISE_MULTIPLE * sd)
        {
            return None;
        }
        Some((current + (slope * lead).min(hi - lo)).min(current * max_growth))
    }
}

/// Student's t at 99.5 % (one-sided) for `df` degrees of freedom: with the few points of one
/// window (a 60 s window holds four 15 s scrapes), a slope must stand out more before it counts.
pub fn t_critical(df: usize) -> f64 {
    const TABLE: [f64; 11] = [
        f64::INFINITY,
        63.66,
        9.92,
        5.84,
        4.60,
        4.03,
        3.71,
        3.50,
        3.36,
        3.25,
        3.17,
    ];
    TABLE.get(df).copied().unwrap_or(3.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rising_load_is_extrapolated_and_bounded() {
        let mut s = Series::default();
        for t in 0..=6 {
            s.push(f64::from(t) * 10.0, 1000.0 + f64::from(t) * 100.0, 60.0);
        }
        // 10/s slope; 45 s ahead of 1600 -> 2050.
        let f = s.forecast(45.0, 60.0, 3.0, 3.0).unwrap();
        assert!((f - 2050.0).abs() < 1e-6, "{f}");
        // Bounded by growth.
        assert!((s.forecast(45.0, 60.0, 1.1, 3.0).unwrap() - 1760.0).abs() < 1e-6);
    }

    #[test]
    fn falling_flat_or_thin_series_gives_nothing() {
        let mut falling = Series::default();
        for t in 0..=6 {
            falling.push(f64::from(t) * 10.0, 1000.0 - f64::from(t) * 100.0, 60.0);
        }
        assert_eq!(falling.forecast(45.0, 60.0, 3.0, 3.0), None);
        let mut thin = Series::default();
        thin.push(0.0, 1.0, 60.0);
        thin.push(5.0, 2.0, 60.0);
        assert_eq!(thin.forecast(45.0, 60.0, 3.0, 3.0), None);
    }

    #[test]
    fn after_a_gap_the_trend_waits_a_window() {
        let mut s = Series::default();
        for t in 0..30 {
            s.push(f64::from(t), 2000.0, 12.0);
        }
        s.gap(30.0, 12.0);
        // The climb of partial sums right after the gap is not taken.
        for (t, v) in [
            (31.0, 400.0),
            (32.0, 1200.0),
            (33.0, 1900.0),
            (40.0, 2000.0),
        ] {
            s.push(t, v, 12.0);
        }
        assert!(s.points.is_empty());
        assert_eq!(s.forecast(30.0, 12.0, 3.0, 3.0), None);
        // A real rise after the settling window is.
        for t in 42..=50 {
            s.push(f64::from(t), 2000.0 + f64::from(t - 42) * 100.0, 12.0);
        }
        assert!(s.forecast(30.0, 12.0, 3.0, 3.0).is_some_and(|f| f > 2800.0));
    }

    #[test]
    fn noise_is_not_a_trend_but_a_real_rise_is() {
        // ±20 % around 6000, alternating with a small drift upwards: not significant.
        let mut noisy = Series::default();
        for (i, v) in [
            6000.0, 7100.0, 5000.0, 6900.0, 5200.0, 7000.0, 5400.0, 7200.0,
        ]
        .iter()
        .enumerate()
        {
            noisy.push(i as f64 * 15.0, *v, 120.0);
        }
        assert!(noisy.slope(120.0).is_some_and(|s| s > 0.0));
        assert_eq!(noisy.forecast(45.0, 120.0, 3.0, 3.0), None);
        // The same noise on a steep rise: significant.
        let mut rising = Series::default();
        for (i, v) in [
            6000.0, 7100.0, 5000.0, 6900.0, 5200.0, 7000.0, 5400.0, 7200.0,
        ]
        .iter()
        .enumerate()
        {
            rising.push(i as f64 * 15.0, v + i as f64 * 3000.0, 120.0);
        }
        assert!(rising.forecast(45.0, 120.0, 3.0, 3.0).is_some());
    }

    #[test]
    fn a_rise_within_the_recent_noise_is_not_forecast() {
        // Ten minutes of ±300 around 6000, then a clean climb of 500 over the last minute:
        // significant as a line, but within 3σ of the noise before it.
        let mut s = Series::default();
        for i in 0..60 {
            let v = if i % 2 == 0 { 5700.0 } else { 6300.0 };
            s.push(f64::from(i) * 10.0, v, 60.0);
        }
        for i in 0..=6 {
            s.push(
                600.0 + f64::from(i) * 10.0,
                6000.0 + f64::from(i) * 83.0,
                60.0,
            );
        }
        assert!(s.significance(60.0).is_some_and(|t| t > 10.0));
        assert_eq!(s.forecast(45.0, 60.0, 3.0, 3.0), None);
        // A climb of 5000 over the same minute is forecast.
        for i in 7..=12 {
            s.push(
                600.0 + f64::from(i) * 10.0,
                6000.0 + f64::from(i - 6) * 1000.0,
                60.0,
            );
        }
        assert!(s.forecast(45.0, 60.0, 3.0, 3.0).is_some());
    }

    #[test]
    fn the_forecast_rise_is_capped_by_the_observed_rise() {
        let mut s = Series::default();
        for t in 0..=6 {
            s.push(f64::from(t) * 10.0, 1000.0 + f64::from(t) * 10.0, 60.0);
        }
        // Slope 1/s over 600 s ahead would add 600; the window rose by 60.
        assert_eq!(s.forecast(600.0, 60.0, 3.0, 3.0), Some(1120.0));
    }

    #[test]
    fn window_forgets_old_points() {
        let mut s = Series::default();
        for t in 0..100 {
            s.push(f64::from(t), 1.0, 30.0);
        }
        assert_eq!(s.points.len(), 100);
        assert_eq!(s.recent(30.0).len(), 31);
        assert_eq!(s.recent(30.0)[0].0, 69.0);
        for t in 100..1000 {
            s.push(f64::from(t), 1.0, 30.0);
        }
        assert_eq!(s.points[0].0, 999.0 - 630.0);
    }
}
