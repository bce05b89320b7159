//! Parsing and printing of sizes, counts, rates and ratios with units.
//!
//! Inputs accept what operators type: `1KiB`, `10GB`, `1.5GiB`, `600`, `20M` messages, `5/min`,
//! `2%`. Decimal prefixes (KB, MB, GB) are powers of 1000 and binary ones (KiB, MiB, GiB) powers
//! of 1024, with no exceptions, because a planner that guesses which one was meant cannot be trusted.
//! Outputs name their unit the same way. This module knows nothing of the formulas.

/// A value that could not be parsed, with what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not {expected}")]
pub struct UnitError {
    /// The text as given.
    pub text: String,
    /// What a valid value looks like.
    pub expected: &'static str,
}

const BYTES_EXPECTED: &str = "a size like 600, 600B, 1KiB, 10GB or 1.5GiB";
const COUNT_EXPECTED: &str = "a count like 1000000, 1_000_000, 1M or 2.5k";
const RATE_EXPECTED: &str = "a rate like 5000, 5000/s, 5k/s, 5/min, 300/h or 1/12s";
const RATIO_EXPECTED: &str = "a ratio like 0.02 or 2%";

/// Splits `1.5GiB` into (1.5, "GiB"), dropping `_` digit separators and spaces.
fn split_number(text: &str) -> Option<(f64, String)> {
    let cleaned: String = text
        .chars()
        .filter(|c| *c != '_' && !c.is_whitespace())
        .collect();
    let end = cleaned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(cleaned.len());
    let number: f64 = cleaned[..end].parse().ok()?;
    if !number.is_finite() || number < 0.0 {
        return None;
    }
    Some((number, cleaned[end..].to_string()))
}

/// Rounds a non-negative product to a whole number, refusing values beyond u64.
fn whole(value: f64) -> Option<u64> {
    let rounded = value.round();
    if rounded.is_finite() && rounded >= 0.0 && rounded < u64::MAX as f64 {
        Some(rounded as u64)
    } else {
        None
    }
}

/// Parses a size in bytes: `600`, `600B`, `1KB` (1000), `1KiB` (1024), up to `PB`/`PiB`.
pub fn parse_bytes(text: &str) -> Result<u64, UnitError> {
    let error = || UnitError {
        text: text.to_string(),
        expected: BYTES_EXPECTED,
    };
    let (number, unit) = split_number(text).ok_or_else(error)?;
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "p" | "pb" => 1_000_000_000_000_000,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        "pi" | "pib" => 1 << 50,
        _ => return Err(error()),
    };
    whole(number * multiplier as f64).ok_or_else(error)
}

/// Parses a count: `20000000`, `20_000_000`, `20M`, `2.5k`, `1G` (powers of 1000).
pub fn parse_count(text: &str) -> Result<u64, UnitError> {
    let error = || UnitError {
        text: text.to_string(),
        expected: COUNT_EXPECTED,
    };
    let number = parse_count_f64(text).ok_or_else(error)?;
    whole(number).ok_or_else(error)
}

fn parse_count_f64(text: &str) -> Option<f64> {
    let (number, unit) = split_number(text)?;
    let multiplier = match unit.as_str() {
        "" => 1.0,
        "k" | "K" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        _ => return None,
    };
    Some(number * multiplier)
}

/// Parses a rate into events per second: `5000`, `5k/s`, `5/min`, `300/h`, `1/12s`, `2/day`.
pub fn parse_rate(text: &str) -> Result<f64, UnitError> {
    let error = || UnitError {
        text: text.to_string(),
        expected: RATE_EXPECTED,
    };
    let (count, per) = match text.split_once('/') {
        Some((count, per)) => (count, per.trim()),
        None => (text, "s"),
    };
    let count = parse_count_f64(count).ok_or_else(error)?;
    // The period may carry its own number: `1/12s` is one every twelve seconds.
    let digits_end = per
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(per.len());
    let periods: f64 = if digits_end == 0 {
        1.0
    } else {
        per[..digits_end].parse().map_err(|_| error())?
    };
    let seconds = match &per[digits_end..] {
        "s" | "sec" | "second" => 1.0,
        "m" | "min" | "minute" => 60.0,
        "h" | "hour" => 3600.0,
        "d" | "day" => 86400.0,
        _ => return Err(error()),
    };
    if periods <= 0.0 {
        return Err(error());
    }
    Ok(count / (periods * seconds))
}

/// Parses a fraction between 0 and 1: `0.02` or `2%`.
pub fn parse_ratio(text: &str) -> Result<f64, UnitError> {
    let error = || UnitError {
        text: text.to_string(),
        expected: RATIO_EXPECTED,
    };
    let trimmed = text.trim();
    let ratio = match trimmed.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map_err(|_| error())? / 100.0,
        None => trimmed.parse::<f64>().map_err(|_| error())?,
    };
    if (0.0..=1.0).contains(&ratio) {
        Ok(ratio)
    } else {
        Err(error())
    }
}

/// Parses a whole percentage: `200` or `200%`.
pub fn parse_percent(text: &str) -> Result<u32, UnitError> {
    let trimmed = text.trim();
    trimmed
        .strip_suffix('%')
        .unwrap_or(trimmed)
        .trim()
        .parse::<u32>()
        .map_err(|_| UnitError {
            text: text.to_string(),
            expected: "a whole percentage like 200 or 200%",
        })
}

/// Scales `value` by `base` until it is below one step; returns the scaled value and unit.
fn scale(value: f64, base: f64, units: &[&'static str]) -> (f64, &'static str) {
    let mut scaled = value;
    let mut index = 0;
    while scaled >= base && index + 1 < units.len() {
        scaled /= base;
        index += 1;
    }
    (scaled, units[index])
}

/// Formats with two decimals, or none when the value is whole.
fn two_decimals(value: f64, unit: &str) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0} {unit}")
    } else {
        format!("{value:.2} {unit}")
    }
}

/// `53.27 GB`: decimal units, as disks and network links are sold.
pub fn format_bytes_decimal(bytes: u128) -> String {
    let (value, unit) = scale(
        bytes as f64,
        1000.0,
        &["B", "kB", "MB", "GB", "TB", "PB", "EB"],
    );
    two_decimals(value, unit)
}

/// `49.61 GiB` or `8 MiB`: binary units, as memory and rlimits are counted.
pub fn format_bytes_binary(bytes: u64) -> String {
    let (value, unit) = scale(
        bytes as f64,
        1024.0,
        &["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"],
    );
    two_decimals(value, unit)
}

/// `72.40 Mb/s`: a byte rate as bits per second in decimal units, as links are rated.
pub fn format_bits_per_second(bytes_per_second: f64) -> String {
    let (value, unit) = scale(
        bytes_per_second * 8.0,
        1000.0,
        &["b/s", "kb/s", "Mb/s", "Gb/s", "Tb/s"],
    );
    two_decimals(value, unit)
}

/// `9.05 MB/s`: a byte rate in decimal units.
pub fn format_bytes_per_second(bytes_per_second: f64) -> String {
    let (value, unit) = scale(
        bytes_per_second,
        1000.0,
        &["B/s", "kB/s", "MB/s", "GB/s", "TB/s"],
    );
    two_decimals(value, unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_decimal_and_binary_units() {
        assert_eq!(parse_bytes("600"), Ok(600));
        assert_eq!(parse_bytes("600B"), Ok(600));
        assert_eq!(parse_bytes("1KiB"), Ok(1024));
        assert_eq!(parse_bytes("1KB"), Ok(1000));
        assert_eq!(parse_bytes("1kb"), Ok(1000));
        assert_eq!(parse_bytes("10GB"), Ok(10_000_000_000));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("1.5 GiB"), Ok(3 << 29));
        assert_eq!(parse_bytes("1_000"), Ok(1000));
        assert_eq!(parse_bytes("2TiB"), Ok(2 << 40));
        for bad in ["", "GiB", "1XB", "-5", "1..2KB", "1e3"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn counts_use_powers_of_1000() {
        assert_eq!(parse_count("20M"), Ok(20_000_000));
        assert_eq!(parse_count("20_000_000"), Ok(20_000_000));
        assert_eq!(parse_count("2.5k"), Ok(2500));
        assert_eq!(parse_count("1G"), Ok(1_000_000_000));
        assert!(
            parse_count("20m").is_err(),
            "lower-case m would read as milli"
        );
        assert!(parse_count("1MiB").is_err());
    }

    #[test]
    fn rates_convert_to_per_second() {
        assert_eq!(parse_rate("5000"), Ok(5000.0));
        assert_eq!(parse_rate("5k/s"), Ok(5000.0));
        assert_eq!(parse_rate("5/min"), Ok(5.0 / 60.0));
        assert_eq!(parse_rate("1/12s"), Ok(1.0 / 12.0));
        assert_eq!(parse_rate("360/h"), Ok(0.1));
        assert_eq!(parse_rate("0.5"), Ok(0.5));
        for bad in ["5/fortnight", "x/s", "5/0s", "5/"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ratios_accept_percent() {
        assert_eq!(parse_ratio("0.02"), Ok(0.02));
        assert_eq!(parse_ratio("2%"), Ok(0.02));
        assert_eq!(parse_ratio("100%"), Ok(1.0));
        assert!(parse_ratio("150%").is_err());
        assert!(parse_ratio("-0.1").is_err());
    }

    #[test]
    fn percentages() {
        assert_eq!(parse_percent("200"), Ok(200));
        assert_eq!(parse_percent("150%"), Ok(150));
        assert!(parse_percent("1.5").is_err());
    }

    #[test]
    fn formatting() {
        assert_eq!(format_bytes_decimal(53_270_561_024), "53.27 GB");
        assert_eq!(format_bytes_decimal(999), "999 B");
        assert_eq!(format_bytes_binary(8 << 20), "8 MiB");
        assert_eq!(format_bytes_binary(0), "0 B");
        assert_eq!(format_bytes_binary(1536), "1.50 KiB");
        assert_eq!(format_bits_per_second(9_050_000.0), "72.40 Mb/s");
        assert_eq!(format_bytes_per_second(9_050_000.0), "9.05 MB/s");
    }
}
