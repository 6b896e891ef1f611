//! Turning a [`Record`] into one line, on the writer thread: JSON (every field) or the
//! combined log format of Apache and nginx (its fixed fields only, so tools that parse it
//! keep working).

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use gw_ops::time::Civil;
use http::Version;
use http::header::HeaderValue;
use serde::Serialize;

use crate::access_log::record::Record;

/// A line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// One JSON object per line, every field (the default: log shippers parse it as is).
    #[default]
    Json,
    /// `client - - [time] "METHOD path PROTOCOL" status bytes_out "referer" "user agent"`.
    Combined,
}

/// Appends `r` as one line (with its `\n`) to `out`.
pub fn write(format: Format, r: &Record, out: &mut Vec<u8>) {
    match format {
        Format::Json => json(r, out),
        Format::Combined => combined(r, out),
    }
}

/// The JSON line's fields, borrowed from the record.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    client_ip: String,
    method: &'a str,
    path: &'a str,
    protocol: &'static str,
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    duration_ms: f64,
    service: Option<&'a str>,
    upstream: Option<&'a str>,
    upstream_status: Option<u16>,
    upstream_time_ms: Option<f64>,
    rate_limit: &'static str,
    rate_limit_policy: Option<&'a str>,
    consumer: Option<&'a str>,
    request_id: Option<String>,
    user_agent: Option<String>,
    referer: Option<String>,
}

fn json(r: &Record, out: &mut Vec<u8>) {
    let text = |v: &Option<HeaderValue>| {
        v.as_ref()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let line = Line {
        time: rfc3339(r.time),
        client_ip: r.client_ip.to_string(),
        method: r.method.as_str(),
        path: r.path.as_ref().map_or("", |p| p.as_str()),
        protocol: protocol(r.version),
        status: r.status,
        bytes_in: r.bytes_in,
        bytes_out: r.bytes_out,
        duration_ms: millis(r.duration),
        service: r.service.as_deref(),
        upstream: r.upstream.as_deref(),
        upstream_status: r.upstream_status,
        upstream_time_ms: r.upstream_time.map(millis),
        rate_limit: r.rate_limit.label(),
        rate_limit_policy: r.rate_limit_policy.as_deref(),
        consumer: r.consumer.as_deref(),
        request_id: text(&r.request_id),
        user_agent: text(&r.user_agent),
        referer: text(&r.referer),
    };
    // Serializing plain strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &line);
    out.push(b'\n');
}

fn combined(r: &Record, out: &mut Vec<u8>) {
    let (c, _) = civil(r.time);
    let month = MONTHS
        .get(c.month.wrapping_sub(1) as usize)
        .unwrap_or(&"Jan");
    let _ = write!(
        out,
        "{} - - [{:02}/{month}/{}:{:02}:{:02}:{:02} +0000] \"{} ",
        r.client_ip, c.day, c.year, c.hour, c.minute, c.second, r.method
    );
    escaped(out, r.path.as_ref().map_or(b"-", |p| p.as_str().as_bytes()));
    let _ = write!(
        out,
        " {}\" {} {} \"",
        protocol(r.version),
        r.status,
        r.bytes_out
    );
    header(out, r.referer.as_ref());
    out.extend_from_slice(b"\" \"");
    header(out, r.user_agent.as_ref());
    out.extend_from_slice(b"\"\n");
}

fn header(out: &mut Vec<u8>, v: Option<&HeaderValue>) {
    match v {
        Some(v) => escaped(out, v.as_bytes()),
        None => out.push(b'-'),
    }
}

/// nginx's escaping for quoted fields: `"`, `\`, control and non-ASCII bytes as `\xHH`, so a
/// client cannot end the field or forge a line.
fn escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b);
        }
    }
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// Milliseconds with microsecond precision.
fn millis(d: Duration) -> f64 {
    // Below 2^53 µs (285 years) the conversion is exact.
    d.as_micros() as f64 / 1000.0
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `2026-11-30T18:09:16.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let (c, ms) = civil(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// UTC calendar fields of `t` and its milliseconds; times before 1970 read as 1970 (a clock
/// that far off has bigger problems).
fn civil(t: SystemTime) -> (Civil, u32) {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    (gw_ops::time::civil(secs), since.subsec_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_log::record::RateLimit;
    use std::sync::Arc;

    fn at(secs: u64, ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms)
    }

    #[test]
    fn calendar_dates() {
        // The calendar itself is gw_ops::time's (tested there).
        for (secs, want) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_798_736_956, "2026-12-31T17:09:16.000Z"),
        ] {
            assert_eq!(rfc3339(at(secs, 0)), want, "{secs}");
        }
        assert_eq!(rfc3339(at(0, 7)), "1970-01-01T00:00:00.007Z");
    }

    fn record() -> Record {
        Record {
            time: at(1_798_736_956, 42),
            client_ip: "192.0.2.7".parse().unwrap(),
            method: http::Method::POST,
            path: Some(http::uri::PathAndQuery::from_static("/api/x?q=1")),
            version: Version::HTTP_2,
            status: 201,
            bytes_in: 3,
            bytes_out: 1234,
            duration: Duration::from_micros(1500),
            service: Some(Arc::from("api")),
            upstream: Some(Arc::from("http://10.0.0.1:80")),
            upstream_status: Some(201),
            upstream_time: Some(Duration::from_micros(1250)),
            rate_limit: RateLimit::Allowed,
            rate_limit_policy: Some(Arc::from("per-ip")),
            consumer: None,
            request_id: Some(HeaderValue::from_static("abc")),
            user_agent: Some(HeaderValue::from_static("curl/8 \"x\"")),
            referer: None,
        }
    }

    #[test]
    fn json_line_has_every_field() {
        let mut out = Vec::new();
        write(Format::Json, &record(), &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let want = serde_json::json!({
            "time": "2026-12-31T17:09:16.042Z", "client_ip": "192.0.2.7", "method": "POST",
            "path": "/api/x?q=1", "protocol": "HTTP/2.0", "status": 201, "bytes_in": 3,
            "bytes_out": 1234, "duration_ms": 1.5, "service": "api",
            "upstream": "http://10.0.0.1:80", "upstream_status": 201, "upstream_time_ms": 1.25,
            "rate_limit": "allowed", "rate_limit_policy": "per-ip", "consumer": null,
            "request_id": "abc", "user_agent": "curl/8 \"x\"", "referer": null,
        });
        assert_eq!(v, want);
    }

    #[test]
    fn combined_line_escapes_quotes() {
        let mut out = Vec::new();
        write(Format::Combined, &record(), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "192.0.2.7 - - [31/Dec/2026:17:09:16 +0000] \"POST /api/x?q=1 HTTP/2.0\" 201 1234 \
             \"-\" \"curl/8 \\x22x\\x22\"\n"
        );
    }

    #[test]
    fn combined_line_of_an_empty_record() {
        let mut out = Vec::new();
        let r = Record {
            user_agent: Some(HeaderValue::from_bytes(b"a\xffb").unwrap()),
            ..Record::default()
        };
        write(Format::Combined, &r, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "0.0.0.0 - - [01/Jan/1970:00:00:00 +0000] \"GET - HTTP/1.1\" 0 0 \"-\" \"a\\xFFb\"\n"
        );
    }
}
