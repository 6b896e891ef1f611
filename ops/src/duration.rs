//! Durations as operators type them (`500ms`, `5s`, `1m`, `1h`) and as the programs print
//! them: the one grammar of gwctl's flags, the data plane's flags and the declarative config
//! file.
//!
//! One integer and one unit, nothing else: the small grammar keeps flags unambiguous and lets
//! every printed duration be pasted back into a flag. Printing picks the largest unit that
//! represents the value exactly, so `90s` stays `90s` and `60s` becomes `1m`.

use std::time::Duration;

/// Parses `500ms`, `5s`, `1m` or `1h` (a non-negative integer and a unit).
///
/// The error says what was wrong and what is accepted; clap prefixes it with the flag name and
/// the offending value.
pub fn parse(text: &str) -> Result<Duration, String> {
    const ACCEPTED: &str = "use a whole number with ms, s, m or h, e.g. 500ms, 5s, 1m, 1h";
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    if number.is_empty() {
        return Err(format!("not a duration; {ACCEPTED}"));
    }
    let n: u64 = number
        .parse()
        .map_err(|_| format!("number too large; {ACCEPTED}"))?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" => return Err(format!("missing unit; {ACCEPTED}")),
        _ => return Err(format!("unknown unit '{unit}'; {ACCEPTED}")),
    };
    let millis = n
        .checked_mul(millis_per_unit)
        .ok_or_else(|| format!("number too large; {ACCEPTED}"))?;
    Ok(Duration::from_millis(millis))
}

/// [`parse`], refusing zero: for timeouts and intervals, where zero would mean "always fail"
/// or "spin".
pub fn parse_positive(text: &str) -> Result<Duration, String> {
    let d = parse(text)?;
    if d.is_zero() {
        return Err("must be more than 0, e.g. 500ms or 5s".to_owned());
    }
    Ok(d)
}

/// Formats a duration in the syntax [`parse`] reads, with the largest exact unit.
///
/// Values that are not whole milliseconds (which gwctl never sends, but a server might store)
/// are shown in nanoseconds rather than rounded, so what is printed is what is stored.
pub fn format(d: Duration) -> String {
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{}ns", d.as_nanos());
    }
    let ms = d.as_millis();
    if ms == 0 {
        "0s".to_string()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        let cases = [
            ("500ms", Duration::from_millis(500)),
            ("5s", Duration::from_secs(5)),
            ("1m", Duration::from_secs(60)),
            ("1h", Duration::from_secs(3600)),
            ("0s", Duration::ZERO),
            ("90s", Duration::from_secs(90)),
            (" 2m ", Duration::from_secs(120)),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input), Ok(want), "input {input:?}");
        }
    }

    #[test]
    fn rejects_everything_else_with_a_reason() {
        let cases = [
            ("", "not a duration"),
            ("s", "not a duration"),
            ("-5s", "not a duration"),
            ("5", "missing unit"),
            ("5x", "unknown unit 'x'"),
            ("5 s", "unknown unit ' s'"),
            ("1.5s", "unknown unit '.5s'"),
            ("5sec", "unknown unit 'sec'"),
            ("1m30s", "unknown unit 'm30s'"),
            ("5S", "unknown unit 'S'"),
            ("99999999999999999999s", "number too large"),
            ("18446744073709551615h", "number too large"),
        ];
        for (input, want) in cases {
            let err = parse(input).expect_err(input);
            assert!(err.contains(want), "input {input:?}: {err}");
            assert!(err.contains("500ms, 5s, 1m, 1h"), "input {input:?}: {err}");
        }
    }

    #[test]
    fn formats_with_the_largest_exact_unit() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(60), "1m"),
            (Duration::from_secs(5400), "90m"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_nanos(1_000_001), "1000001ns"),
        ];
        for (input, want) in cases {
            assert_eq!(format(input), want, "input {input:?}");
        }
    }

    #[test]
    fn format_and_parse_round_trip() {
        for text in ["500ms", "1500ms", "5s", "90s", "1m", "90m", "1h", "25h"] {
            let d = parse(text).unwrap();
            assert_eq!(format(d), text);
            assert_eq!(parse(&format(d)), Ok(d));
        }
    }

    proptest::proptest! {
        #[test]
        fn every_printed_duration_parses_back(ms in 0u64..(1u64 << 40)) {
            let d = Duration::from_millis(ms);
            proptest::prop_assert_eq!(parse(&format(d)), Ok(d));
        }

        #[test]
        fn parse_never_panics_and_accepts_only_digits_then_a_unit(
            // Mostly near-misses of the grammar, plus arbitrary text.
            text in "[ 0-9]{0,5}[hmsx. ]{0,3}|\\PC{0,12}"
        ) {
            if let Ok(d) = parse(&text) {
                let t = text.trim();
                let unit = t.trim_start_matches(|c: char| c.is_ascii_digit());
                proptest::prop_assert!(["ms", "s", "m", "h"].contains(&unit), "{t:?}");
                proptest::prop_assert_eq!(parse(&format(d)), Ok(d));
            }
        }
    }

    #[test]
    fn positive_refuses_zero_only() {
        assert_eq!(parse_positive("1ms"), Ok(Duration::from_millis(1)));
        for zero in ["0s", "0ms", "0h"] {
            let err = parse_positive(zero).unwrap_err();
            assert!(err.contains("must be more than 0"), "{zero}: {err}");
        }
        assert!(parse_positive("5x").unwrap_err().contains("unknown unit"));
    }
}
