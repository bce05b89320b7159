//! `STRFTIME` and `STRPTIME`: timestamps as text and back, in UTC.
//!
//! Timestamps are seconds since the Unix epoch as a float (what `UNIX_TIMESTAMP()` returns).
//! Formats follow strftime: `%Y %m %d %H %M %S %j %y %e %F %T %s %%`, plus AMPS's `%f`
//! (microseconds, 6 digits) and `%03f` (milliseconds, 3 digits). Anything else is copied as is.
//! A time that cannot be represented or parsed is NULL. It owns no state and reads no clock.

use crate::civil::{civil_from_days, days_from_civil};

/// Timestamps outside years 0–9999 are refused (formatting them would need other widths).
const SECONDS_MAX: f64 = 253_402_300_800.0;
const SECONDS_MIN: f64 = -62_167_219_200.0;

/// Formats `seconds` since the epoch with `pattern`; `None` when out of range or not finite.
pub(crate) fn format(pattern: &[u8], seconds: f64) -> Option<Vec<u8>> {
    if !seconds.is_finite() || !(SECONDS_MIN..SECONDS_MAX).contains(&seconds) {
        return None;
    }
    let whole = seconds.floor() as i64;
    let micros = ((seconds - whole as f64) * 1e6).round().min(999_999.0) as u32;
    let (year, month, day) = civil_from_days(whole.div_euclid(86_400));
    let second_of_day = whole.rem_euclid(86_400) as u32;
    let day_of_year = days_from_civil(year, month, day)? - days_from_civil(year, 1, 1)? + 1;
    let mut out = Vec::with_capacity(pattern.len() + 16);
    let mut rest = pattern;
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        if byte != b'%' {
            out.push(byte);
            continue;
        }
        if let Some(tail) = rest.strip_prefix(b"03f") {
            rest = tail;
            push_number(&mut out, i64::from(micros / 1000), 3);
            continue;
        }
        let Some((&spec, tail)) = rest.split_first() else {
            out.push(b'%');
            break;
        };
        rest = tail;
        match spec {
            b'Y' => push_number(&mut out, year, 4),
            b'y' => push_number(&mut out, year.rem_euclid(100), 2),
            b'm' => push_number(&mut out, i64::from(month), 2),
            b'd' => push_number(&mut out, i64::from(day), 2),
            b'e' => {
                if day < 10 {
                    out.push(b' ');
                }
                push_number(&mut out, i64::from(day), 1);
            }
            b'j' => push_number(&mut out, day_of_year, 3),
            b'H' => push_number(&mut out, i64::from(second_of_day / 3600), 2),
            b'M' => push_number(&mut out, i64::from(second_of_day / 60 % 60), 2),
            b'S' => push_number(&mut out, i64::from(second_of_day % 60), 2),
            b'f' => push_number(&mut out, i64::from(micros), 6),
            b's' => push_number(&mut out, whole, 1),
            b'F' => out.extend_from_slice(&format(b"%Y-%m-%d", seconds)?),
            b'T' => out.extend_from_slice(&format(b"%H:%M:%S", seconds)?),
            b'%' => out.push(b'%'),
            other => out.extend_from_slice(&[b'%', other]),
        }
    }
    Some(out)
}

fn push_number(out: &mut Vec<u8>, value: i64, width: usize) {
    let text = format!("{:0width$}", value, width = width);
    out.extend_from_slice(text.as_bytes());
}

/// Parses `text` with `format` into seconds since the epoch (UTC); `None` when it does not fit.
pub(crate) fn parse(text: &[u8], format: &[u8]) -> Option<f64> {
    let (mut year, mut month, mut day) = (1970i64, 1u32, 1u32);
    let (mut hour, mut minute, mut second, mut micros) = (0u32, 0u32, 0u32, 0u32);
    let mut text = text;
    let mut rest = format;
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        if byte != b'%' {
            text = text.strip_prefix(&[byte][..])?;
            continue;
        }
        if let Some(tail) = rest.strip_prefix(b"03f") {
            rest = tail;
            micros = take_digits(&mut text, 3, 3)? as u32 * 1000;
            continue;
        }
        let (&spec, tail) = rest.split_first()?;
        rest = tail;
        match spec {
            b'Y' => year = take_digits(&mut text, 4, 4)?,
            b'm' => month = take_digits(&mut text, 1, 2)? as u32,
            b'd' | b'e' => {
                if spec == b'e' {
                    text = text.strip_prefix(b" ").unwrap_or(text);
                }
                day = take_digits(&mut text, 1, 2)? as u32;
            }
            b'H' => hour = take_digits(&mut text, 1, 2)? as u32,
            b'M' => minute = take_digits(&mut text, 1, 2)? as u32,
            b'S' => second = take_digits(&mut text, 1, 2)? as u32,
            b'f' => {
                let start = text.len();
                let digits = take_digits(&mut text, 1, 9)?;
                let count = start - text.len();
                micros = (digits as f64 * 10f64.powi(6 - count as i32)).round() as u32;
            }
            b'%' => text = text.strip_prefix(b"%")?,
            _ => return None,
        }
    }
    if !text.is_empty() || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day)?;
    let seconds = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    Some(seconds as f64 + f64::from(micros) / 1e6)
}

fn take_digits(text: &mut &[u8], min: usize, max: usize) -> Option<i64> {
    let count = text
        .iter()
        .take(max)
        .take_while(|byte| byte.is_ascii_digit())
        .count();
    if count < min {
        return None;
    }
    let value = std::str::from_utf8(&text[..count]).ok()?.parse().ok()?;
    *text = &text[count..];
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_amps_timestamps_and_strftime_fields() {
        let seconds = 1_795_299_710.394_905;
        assert_eq!(
            format(b"%Y%m%dT%H%M%S.%fZ", seconds).unwrap(),
            b"20261121T222150.394905Z"
        );
        assert_eq!(
            format(b"%F %T.%03f", seconds).unwrap(),
            b"2026-11-21 22:21:50.394"
        );
        assert_eq!(
            format(b"%j %y %e %s %% %q", 86_400.0 * 31.0).unwrap(),
            b"032 70  1 2678400 % %q"
        );
        assert_eq!(format(b"%Y", f64::NAN), None);
    }

    #[test]
    fn parses_what_it_formats() {
        for seconds in [0.0, 951_782_400.5, 1_795_299_710.394_905, -86_400.25] {
            let text = format(b"%Y-%m-%dT%H:%M:%S.%f", seconds).unwrap();
            let back = parse(&text, b"%Y-%m-%dT%H:%M:%S.%f").unwrap();
            assert!(
                (back - seconds).abs() < 1e-6,
                "{seconds} -> {} -> {back}",
                String::from_utf8_lossy(&text)
            );
        }
        assert_eq!(parse(b"20000229", b"%Y%m%d"), Some(951_782_400.0));
        assert_eq!(parse(b"20010229", b"%Y%m%d"), None);
        assert_eq!(parse(b"2000-01-01x", b"%Y-%m-%d"), None);
        assert_eq!(parse(b"12:00", b"%H:%M"), Some(43_200.0));
    }

    #[test]
    fn the_filter_language_calls_them() {
        use crate::filter::{Filter, MessageContext};
        let context = MessageContext::default();
        let matches = |text: &str, payload: &str| {
            Filter::compile(text)
                .unwrap()
                .matches(payload.as_bytes(), &context)
        };
        assert!(matches(
            "STRFTIME('%Y-%m-%d', /ts) = '2026-11-21'",
            r#"{"ts":1795299710.39}"#
        ));
        assert!(matches(
            "STRPTIME(/day, '%Y%m%d') = 951782400",
            r#"{"day":"20000229"}"#
        ));
        assert!(matches(
            "STRPTIME(/day, '%Y%m%d') IS NULL",
            r#"{"day":"not a day"}"#
        ));
        assert!(matches(
            "/ts < UNIX_TIMESTAMP() AND STRFTIME('%H', /ts) = '22'",
            r#"{"ts":1795299710}"#
        ));
    }
}
