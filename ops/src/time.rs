//! Calendar dates from Unix time, without a date crate: for log lines (the access log's RFC
//! 3339 and combined-format times) and certificate expiry dates.

/// A UTC date and time of day (proleptic Gregorian calendar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// Year, e.g. 2026.
    pub year: i64,
    /// Month, 1 to 12.
    pub month: u32,
    /// Day of the month, 1 to 31.
    pub day: u32,
    /// Hour, 0 to 23.
    pub hour: u32,
    /// Minute, 0 to 59.
    pub minute: u32,
    /// Second, 0 to 59.
    pub second: u32,
}

/// The UTC date and time `unix` seconds after the Unix epoch (negative: before it).
pub fn civil(unix: i64) -> Civil {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    // Every value below is in range by construction (month 1-12, day 1-31, secs < 86,400).
    let small = |v: i64| u32::try_from(v).unwrap_or(0);
    Civil {
        year: yoe + era * 400 + i64::from(month <= 2),
        month: small(month),
        day: small(day),
        hour: small(secs / 3600),
        minute: small(secs % 3600 / 60),
        second: small(secs % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        // (Unix seconds, y, m, d, h, min, s), checked against `date -u -d @N`.
        for (unix, want) in [
            (0, (1970, 1, 1, 0, 0, 0)),
            (-1, (1969, 12, 31, 23, 59, 59)),
            (951_782_400, (2000, 2, 29, 0, 0, 0)),
            (1_709_164_799, (2024, 2, 28, 23, 59, 59)),
            (1_798_736_956, (2026, 12, 31, 17, 9, 16)),
            (4_102_444_800, (2100, 1, 1, 0, 0, 0)),
        ] {
            let c = civil(unix);
            assert_eq!(
                (c.year, c.month, c.day, c.hour, c.minute, c.second),
                want,
                "{unix}"
            );
        }
    }
}
