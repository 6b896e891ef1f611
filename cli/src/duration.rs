//! Durations in gwctl: the shared grammar (`gw_ops::duration`: `500ms`, `5s`, `1m`, `1h`) and
//! the conversions to and from the protobuf form, plus the rough form tables use.

use std::time::Duration;

pub use gw_ops::duration::{format, parse, parse_positive};

/// Converts to the protobuf form sent to the control plane.
pub fn to_proto(d: Duration) -> prost_types::Duration {
    // Saturate rather than fail: `parse` caps input far below i64::MAX seconds anyway.
    prost_types::Duration::try_from(d).unwrap_or(prost_types::Duration {
        seconds: i64::MAX,
        nanos: 0,
    })
}

/// Formats a protobuf duration from the control plane; unset prints as `-`.
pub fn format_proto(d: Option<&prost_types::Duration>) -> String {
    match d {
        None => "-".to_string(),
        Some(d) => match Duration::try_from(*d) {
            Ok(d) => format(d),
            // Negative: the server never stores one, but show it rather than hide it.
            Err(_) => format!("-{}", format(Duration::new(d.seconds.unsigned_abs(), 0))),
        },
    }
}

/// A rough, readable form for tables: whole seconds, at most the two largest units
/// (`45s`, `5m12s`, `3h5m`, `2d3h`). Not for flags: [`format()`] prints what [`parse`] reads.
pub fn approx(d: Duration) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let secs = d.as_secs();
    if secs == 0 {
        return "0s".to_string();
    }
    let Some(first) = UNITS.iter().position(|(size, _)| secs >= *size) else {
        return "0s".to_string();
    };
    let mut text = String::new();
    let mut rest = secs;
    for (size, unit) in UNITS.iter().skip(first).take(2) {
        let n = rest / size;
        rest %= size;
        if n > 0 {
            text.push_str(&format!("{n}{unit}"));
        }
    }
    text
}

/// A protobuf duration from the control plane as a std one; unset or negative: `None`.
pub fn from_proto(d: Option<prost_types::Duration>) -> Option<Duration> {
    d.and_then(|d| Duration::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_conversion_keeps_the_value() {
        let p = to_proto(Duration::from_millis(1500));
        assert_eq!((p.seconds, p.nanos), (1, 500_000_000));
        assert_eq!(format_proto(Some(&p)), "1500ms");
        assert_eq!(format_proto(None), "-");
        let negative = prost_types::Duration {
            seconds: -5,
            nanos: 0,
        };
        assert_eq!(format_proto(Some(&negative)), "-5s");
    }

    #[test]
    fn approx_shows_the_two_largest_units() {
        let cases = [
            (0, "0s"),
            (1, "1s"),
            (59, "59s"),
            (60, "1m"),
            (120, "2m"),
            (312, "5m12s"),
            (3_600, "1h"),
            (3_725, "1h2m"),
            (86_399, "23h59m"),
            (90_061, "1d1h"),
            (86_400 * 3 + 59, "3d"),
        ];
        for (secs, want) in cases {
            assert_eq!(approx(Duration::from_secs(secs)), want, "{secs}s");
        }
        assert_eq!(approx(Duration::from_millis(1_999)), "1s");
    }

    #[test]
    fn proto_durations_convert_unless_unset_or_negative() {
        let p = prost_types::Duration {
            seconds: 2,
            nanos: 5,
        };
        assert_eq!(from_proto(Some(p)), Some(Duration::new(2, 5)));
        assert_eq!(from_proto(None), None);
        let negative = prost_types::Duration {
            seconds: -1,
            nanos: 0,
        };
        assert_eq!(from_proto(Some(negative)), None);
    }
}
