//! Formatting every layer may use: numbers, byte counts, value ranges and module paths.
//!
//! A leaf module (it imports nothing of the crate), so that `audit`, `report`, `tui` and `cli`
//! share one way of writing a number without depending on one another.

/// Formats a value compactly with about four significant digits, switching to scientific
/// notation for very small or large magnitudes.
pub fn num(v: f64) -> String {
    if v == 0.0 {
        return "0".to_owned();
    }
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if (1e-3..1e5).contains(&a) {
        let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
        let s = format!("{v:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        }
    } else {
        format!("{v:.3e}")
    }
}

/// Formats an optional value, `-` when absent.
pub fn opt_num(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), num)
}

/// Formats a byte count with a binary unit.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `min..max` of optional bounds, `-` when there are none.
pub fn range(min: Option<f64>, max: Option<f64>) -> String {
    match (min, max) {
        (None, None) => "-".to_owned(),
        (min, max) => format!("{}..{}", opt_num(min), opt_num(max)),
    }
}

/// The top-level sub-model of a module path (`backbone` of `backbone.layer1.0.bn1`).
pub fn submodel(name: &str) -> &str {
    name.split(['.', '/']).next().unwrap_or(name)
}

/// `n` and `noun`, with an `s` unless `n` is 1.
pub fn plural(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// A tensor shape as `[5, 4]`, or `-` when absent.
pub fn shape(s: &Option<Vec<u64>>) -> String {
    s.as_ref().map_or_else(
        || "-".to_owned(),
        |s| {
            let dims: Vec<String> = s.iter().map(u64::to_string).collect();
            format!("[{}]", dims.join(", "))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(num(0.0), "0");
        assert_eq!(num(1.5), "1.5");
        assert_eq!(num(-0.012345), "-0.01235");
        assert_eq!(num(1234.5678), "1235");
        assert_eq!(num(1e-9), "1.000e-9");
        assert_eq!(num(f64::NAN), "NaN");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(range(Some(-1.0), Some(2.5)), "-1..2.5");
        assert_eq!(range(None, None), "-");
        assert_eq!(submodel("backbone.layer1.0.bn1"), "backbone");
        assert_eq!(submodel("params/bn"), "params");
    }
}
