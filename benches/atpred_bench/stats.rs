//! Medians, percentiles and the Markdown cells they are shown in.

/// The median (mean of the middle two for an even count); NaN for no values.
pub fn median(values: &[f64]) -> f64 {
    let mut v = sorted(values);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v.swap_remove(n / 2),
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile `p` (0–100); NaN for no values.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let v = sorted(values);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

pub fn min_max(values: &[f64]) -> (f64, f64) {
    let v = sorted(values);
    match (v.first(), v.last()) {
        (Some(a), Some(b)) => (*a, *b),
        _ => (f64::NAN, f64::NAN),
    }
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// `x` with `digits` decimals and thousands separators in the integer part.
pub fn num(x: f64, digits: usize) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let s = format!("{:.*}", digits, x.abs());
    let (int, frac) = s
        .split_once('.')
        .map_or((s.as_str(), None), |(i, f)| (i, Some(f)));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if x < 0.0 { "-" } else { "" };
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

/// "median" and "min – max" cells for `values`.
pub fn cells(values: &[f64], digits: usize) -> (String, String) {
    let (lo, hi) = min_max(values);
    (
        num(median(values), digits),
        format!("{} – {}", num(lo, digits), num(hi, digits)),
    )
}

pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

/// Every value of a series, for the "every run" section.
pub fn list(values: &[f64], digits: usize) -> String {
    values
        .iter()
        .map(|v| num(*v, digits))
        .collect::<Vec<_>>()
        .join(", ")
}
