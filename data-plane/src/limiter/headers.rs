//! The IETF RateLimit header items (draft-ietf-httpapi-ratelimit-headers, drafts 08 to 11).
//!
//! Both fields are Structured Field lists whose members are the policy name as an sf-string
//! with parameters:
//! - `RateLimit-Policy: "api";q=5;w=60`: quota `q` per window `w` seconds. Fixed per policy
//!   and rate, so it is built once when the rate is set.
//! - `RateLimit: "api";r=4;t=60`: `r` remaining quota units, `t` seconds until the quota is
//!   fully restored. Changes per request, so it is written with integer formatting into a
//!   buffer from a precomputed `"api";r=` prefix, without `format!`.

use std::sync::OnceLock;

use http::HeaderValue;

use crate::limiter::spec::{Decision, RateSpec};

/// `name` as a Structured Field string: quoted, with `"` and `\` escaped. Policy names are
/// validated as DNS labels by the control plane, so nothing else needs care; a byte that an
/// sf-string cannot hold (outside printable ASCII) becomes `?` rather than an invalid header.
pub(crate) fn quote(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
    out
}

/// The `RateLimit-Policy` item for `quoted` (from [`quote`]) at `rate`.
pub(crate) fn policy_item(quoted: &str, rate: &RateSpec) -> String {
    format!("{quoted};q={};w={}", rate.limit, rate.period.as_secs())
}

/// Appends the `RateLimit` item for `decision` to `out`; `prefix` is `"name";r=`.
pub(crate) fn write_rate_limit_item(prefix: &[u8], decision: &Decision, out: &mut Vec<u8>) {
    let mut digits = itoa::Buffer::new();
    out.extend_from_slice(prefix);
    out.extend_from_slice(digits.format(decision.remaining).as_bytes());
    out.extend_from_slice(b";t=");
    out.extend_from_slice(digits.format(decision.reset_secs).as_bytes());
}

/// Every `RateLimit-Policy` item a policy has had, so that [`PolicyItems::current`] can hand
/// out a `&str` that stays valid while the rate changes underneath it. Append-only and
/// deduplicated: it grows only with the number of distinct rates ever configured for one
/// policy, and is freed with the limiter.
#[derive(Debug)]
pub(crate) struct PolicyItems {
    head: ItemNode,
}

#[derive(Debug)]
struct ItemNode {
    text: Box<str>,
    value: HeaderValue,
    next: OnceLock<Box<ItemNode>>,
}

impl ItemNode {
    fn new(text: String) -> Self {
        // `quote` leaves only printable ASCII and the parameters are digits, so this is
        // always valid; the fallback only keeps the code total.
        let value = HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""));
        ItemNode {
            text: text.into_boxed_str(),
            value,
            next: OnceLock::new(),
        }
    }
}

impl PolicyItems {
    pub(crate) fn new(first: String) -> Self {
        PolicyItems {
            head: ItemNode::new(first),
        }
    }

    /// The index of `text`, appending it if it is new.
    pub(crate) fn intern(&self, text: String) -> usize {
        let mut node = &self.head;
        let mut index = 0;
        let mut text = Some(text);
        loop {
            if text.as_deref() == Some(&*node.text) {
                return index;
            }
            // Appends at the tail; under concurrent interning the loser just walks on.
            node = node
                .next
                .get_or_init(|| Box::new(ItemNode::new(text.take().unwrap_or_default())));
            index += 1;
            if text.is_none() {
                return index;
            }
        }
    }

    fn node(&self, index: usize) -> &ItemNode {
        let mut node = &self.head;
        for _ in 0..index {
            match node.next.get() {
                Some(next) => node = next,
                None => break,
            }
        }
        node
    }

    pub(crate) fn text(&self, index: usize) -> &str {
        &self.node(index).text
    }

    pub(crate) fn value(&self, index: usize) -> &HeaderValue {
        &self.node(index).value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn quoting() {
        let cases = [
            ("api", r#""api""#),
            ("a-b-1", r#""a-b-1""#),
            (r#"q"uo\te"#, r#""q\"uo\\te""#),
            ("tab\there", r#""tab?here""#),
            ("é", r#""?""#),
            ("", r#""""#),
        ];
        for (name, want) in cases {
            assert_eq!(quote(name), want, "{name:?}");
        }
    }

    #[test]
    fn policy_items() {
        let spec = |limit, secs| RateSpec {
            limit,
            period: Duration::from_secs(secs),
            burst: 1,
        };
        assert_eq!(policy_item(r#""api""#, &spec(5, 60)), r#""api";q=5;w=60"#);
        assert_eq!(
            policy_item(r#""d""#, &spec(1_000_000, 86_400)),
            r#""d";q=1000000;w=86400"#
        );
    }

    #[test]
    fn rate_limit_items() {
        let cases = [
            ((0, 60), r#""api";r=0;t=60"#),
            ((4, 12), r#""api";r=4;t=12"#),
            ((u64::MAX, 0), r#""api";r=18446744073709551615;t=0"#),
        ];
        let mut buf = Vec::new();
        for ((remaining, reset_secs), want) in cases {
            let d = Decision {
                allowed: true,
                remaining,
                reset_secs,
                retry_after_secs: 0,
            };
            buf.clear();
            write_rate_limit_item(br#""api";r="#, &d, &mut buf);
            assert_eq!(std::str::from_utf8(&buf).unwrap(), want);
        }
    }

    #[test]
    fn items_are_interned_and_stable() {
        let items = PolicyItems::new("a".into());
        assert_eq!(items.intern("a".into()), 0);
        assert_eq!(items.intern("b".into()), 1);
        assert_eq!(items.intern("c".into()), 2);
        assert_eq!(
            items.intern("b".into()),
            1,
            "a value seen before is not stored twice"
        );
        assert_eq!(items.intern("a".into()), 0);
        assert_eq!(
            (items.text(0), items.text(1), items.text(2)),
            ("a", "b", "c")
        );
        assert_eq!(items.value(2), "c");
    }
}
