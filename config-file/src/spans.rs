//! Where each node of a YAML (or JSON) document is: a tree of line/column positions, read
//! alongside the typed document, so that a problem found later (a bad duration here, a route
//! conflict in the control plane's answer) can be reported at the line it came from.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A node and where it starts (1-based line and column; 0 when unknown).
#[derive(Debug, Default)]
pub struct Node {
    /// Line of the node.
    pub line: u64,
    /// Column of the node.
    pub column: u64,
    kids: Kids,
}

#[derive(Debug, Default)]
enum Kids {
    Map(Vec<(String, Node)>),
    Seq(Vec<Node>),
    #[default]
    Leaf,
}

impl Node {
    /// The deepest node on `path` (`services[2].route.path_prefix`) that exists: the field if
    /// it is in the document, else the nearest enclosing node (the object a missing field
    /// belongs to).
    pub fn locate(&self, path: &str) -> &Node {
        let mut node = self;
        for segment in segments(path) {
            let next = match (&node.kids, segment) {
                (Kids::Map(entries), Segment::Key(key)) => {
                    entries.iter().find(|(k, _)| k == key).map(|(_, n)| n)
                }
                (Kids::Seq(items), Segment::Index(i)) => items.get(i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node
    }
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// `a[1].b` → `a`, `1`, `b`. Anything unparsable ends the path (the caller then reports the
/// enclosing node).
fn segments(path: &str) -> impl Iterator<Item = Segment<'_>> {
    path.split('.')
        .flat_map(|part| {
            let (key, rest) = part.split_once('[').unwrap_or((part, ""));
            let key = (!key.is_empty()).then_some(Segment::Key(key));
            let indices = rest
                .split('[')
                .filter_map(|i| i.trim_end_matches(']').parse().ok().map(Segment::Index));
            key.into_iter().chain(indices)
        })
        .collect::<Vec<_>>()
        .into_iter()
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Kids>::deserialize(d)?;
        Ok(Node {
            line: spanned.referenced.line(),
            column: spanned.referenced.column(),
            kids: spanned.value,
        })
    }
}

impl<'de> Deserialize<'de> for Kids {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KidsVisitor)
    }
}

struct KidsVisitor;

impl<'de> Visitor<'de> for KidsVisitor {
    type Value = Kids;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kids, A::Error> {
        let mut entries = Vec::new();
        while let Some(Key(key)) = map.next_key()? {
            entries.push((key, map.next_value()?));
        }
        Ok(Kids::Map(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kids, A::Error> {
        let mut items = Vec::new();
        while let Some(node) = seq.next_element()? {
            items.push(node);
        }
        Ok(Kids::Seq(items))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Kids, E> {
        Ok(Kids::Leaf)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Kids, E> {
        Ok(Kids::Leaf)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Kids, E> {
        Ok(Kids::Leaf)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Kids, E> {
        Ok(Kids::Leaf)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Kids, E> {
        Ok(Kids::Leaf)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Kids, E> {
        Ok(Kids::Leaf)
    }
    fn visit_none<E: de::Error>(self) -> Result<Kids, E> {
        Ok(Kids::Leaf)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Kids, D::Error> {
        Kids::deserialize(d)
    }
}

/// A mapping key as text, whatever scalar it is.
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
                Ok(Key(String::new()))
            }
        }
        d.deserialize_any(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_to_their_line_or_the_nearest_enclosing_node() {
        let yaml = "services:\n  - name: a\n    route:\n      path_prefix: /a\n  - name: b\n    route:\n      path_prefix: b\n";
        let root: Node = serde_saphyr::from_str(yaml).unwrap();
        let cases = [
            ("services[0].name", 2),
            ("services[0].route.path_prefix", 4),
            ("services[1].route.path_prefix", 7),
            ("services[1].route.hosts", 7),
            ("services[1].endpoints[3]", 5),
            ("services[1]", 5),
            ("services[9].name", 2),
        ];
        for (path, line) in cases {
            let node = root.locate(path);
            assert_eq!(node.line, line, "{path}: {node:?}");
        }
    }

    #[test]
    fn json_documents_have_lines_too() {
        let json = "{\n  \"services\": [\n    {\n      \"name\": \"a\",\n      \"route\": {\"path_prefix\": \"x\"}\n    }\n  ]\n}\n";
        let root: Node = serde_saphyr::from_str(json).unwrap();
        assert_eq!(root.locate("services[0].route.path_prefix").line, 5);
        assert_eq!(root.locate("services[0].name").line, 4);
    }
}
