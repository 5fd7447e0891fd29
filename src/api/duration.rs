//! Go-style durations ("30s", "1m", "1h30m", "1.5s", "500ms"), as Flagger's fields are written.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a duration such as 30s, 1m or 1h30m")]
pub struct InvalidDuration {
    pub value: String,
}

pub fn parse_duration(value: &str) -> Result<Duration, InvalidDuration> {
    let invalid = || InvalidDuration {
        value: value.to_string(),
    };
    let mut rest = value.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        total += number * seconds_per_unit;
    }
    Duration::try_from_secs_f64(total).map_err(|_| invalid())
}

/// Writes a duration the way Go and CEL read it back ("10s", "1m30s", "250ms").
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, (s % 3600) / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_go_parses() {
        let cases = [
            ("30s", 30_000),
            ("1m", 60_000),
            ("1h30m", 5_400_000),
            ("1.5s", 1_500),
            ("500ms", 500),
            ("2m0s", 120_000),
            ("0", 0),
        ];
        for (text, ms) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_what_go_refuses() {
        for text in ["", "10", "1x", "m", "1m 30s", "-1s", "1..2s"] {
            assert!(parse_duration(text).is_err(), "{text:?}");
        }
        assert_eq!(
            parse_duration("ten").unwrap_err().to_string(),
            "\"ten\" is not a duration such as 30s, 1m or 1h30m"
        );
    }

    #[test]
    fn formats_round_trip() {
        for text in ["10s", "1m30s", "250ms", "1h", "0s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }
}
