//! Request paths as routed, rate-limited and forwarded: dot segments removed (RFC 3986
//! §5.2.4), so `/other/../api/x` is routed as `/api/x` (under `/api`'s policies) and a
//! backend never sees `/../secret`.
//!
//! A segment is a dot segment when it is `.` or `..` once `%2e`/`%2E` are decoded (clients and
//! attackers both write them encoded). Nothing else is decoded: an encoded slash (`%2F`) stays
//! inside its segment and never splits it, so `/api%2F..` is one segment. What cannot be
//! normalised safely is refused with 400: `..` that would climb above the root, and an encoded
//! NUL (`%00`), which backends written in C read as the end of the path.
//!
//! Cost: a path with no `.` and no `%` (nearly all of them) is checked in one byte scan and
//! left alone; only a path that needs rewriting allocates.

use http::uri::{PathAndQuery, Uri};

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// `..` above the root.
    AboveRoot,
    /// An encoded NUL (`%00`).
    Nul,
}

/// `.` or `%2e` (any case).
fn dot_at(seg: &[u8], i: usize) -> Option<usize> {
    match seg.get(i)? {
        b'.' => Some(i + 1),
        b'%' if seg.get(i + 1) == Some(&b'2') && matches!(seg.get(i + 2), Some(b'e' | b'E')) => {
            Some(i + 3)
        }
        _ => None,
    }
}

/// How many dots `seg` is made of, if it is only dots (1 or 2 of them).
fn dots(seg: &str) -> Option<u8> {
    let b = seg.as_bytes();
    let one = dot_at(b, 0)?;
    if one == b.len() {
        return Some(1);
    }
    let two = dot_at(b, one)?;
    (two == b.len()).then_some(2)
}

/// The normalised form of `path` (which starts with `/`), or `None` when it is already
/// normal.
pub fn normalize(path: &str) -> Result<Option<String>, PathError> {
    let bytes = path.as_bytes();
    if !bytes.iter().any(|&b| b == b'.' || b == b'%') {
        return Ok(None);
    }
    if bytes
        .windows(3)
        .any(|w| w[0] == b'%' && w[1] == b'0' && w[2] == b'0')
    {
        return Err(PathError::Nul);
    }
    let Some(rest) = path.strip_prefix('/') else {
        // Not origin-form (`*`, or an authority): nothing to normalise.
        return Ok(None);
    };
    let mut out: Vec<&str> = Vec::new();
    let mut changed = false;
    let mut trailing_slash = false;
    for seg in rest.split('/') {
        trailing_slash = false;
        match dots(seg) {
            Some(1) => {
                changed = true;
                trailing_slash = true;
            }
            Some(_) => {
                changed = true;
                if out.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing_slash = true;
            }
            None => out.push(seg),
        }
    }
    if !changed {
        return Ok(None);
    }
    let mut normal = String::with_capacity(path.len());
    for seg in &out {
        normal.push('/');
        normal.push_str(seg);
    }
    if trailing_slash || normal.is_empty() {
        normal.push('/');
    }
    Ok(Some(normal))
}

/// Rewrites `uri`'s path in place if it needs normalising (keeping the query).
pub fn normalize_uri(uri: &mut Uri) -> Result<(), PathError> {
    let Some(normal) = normalize(uri.path())? else {
        return Ok(());
    };
    let pq = match uri.query() {
        Some(q) => format!("{normal}?{q}"),
        None => normal,
    };
    // Built from a valid path's own bytes, minus segments and plus '/': still valid.
    let Ok(pq) = PathAndQuery::from_maybe_shared(pq) else {
        return Err(PathError::AboveRoot);
    };
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query = Some(pq);
    if let Ok(new) = Uri::from_parts(parts) {
        *uri = new;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_table() {
        // (input, Ok(Some(normal)) | Ok(None) = unchanged | Err)
        let cases: &[(&str, Result<Option<&str>, PathError>)] = &[
            ("/", Ok(None)),
            ("/api/x", Ok(None)),
            ("/api/x.json", Ok(None)),
            ("/api/%41", Ok(None)),
            ("/other/../api/x", Ok(Some("/api/x"))),
            ("/a/./b", Ok(Some("/a/b"))),
            ("/a/b/..", Ok(Some("/a/"))),
            ("/a/b/.", Ok(Some("/a/b/"))),
            ("/a/..", Ok(Some("/"))),
            ("/.", Ok(Some("/"))),
            ("/a/%2e%2e/b", Ok(Some("/b"))),
            ("/a/%2E./b", Ok(Some("/b"))),
            ("/a/.%2e", Ok(Some("/"))),
            ("/a/%2e/b", Ok(Some("/a/b"))),
            ("/..", Err(PathError::AboveRoot)),
            ("/api/../../secret", Err(PathError::AboveRoot)),
            ("/%2e%2e/x", Err(PathError::AboveRoot)),
            ("/a%00b", Err(PathError::Nul)),
            ("/a/%00", Err(PathError::Nul)),
            // Not dot segments: left alone.
            ("/a/...", Ok(None)),
            ("/a/..b", Ok(None)),
            ("/a/%2e%2e%2e", Ok(None)),
            ("/a/.hidden", Ok(None)),
            // An encoded slash never splits a segment.
            ("/api%2F..", Ok(None)),
            ("/a/..%2Fb", Ok(None)),
            ("/a/%2F/../b", Ok(Some("/a/b"))),
            // Empty segments are kept.
            ("//a/../b", Ok(Some("//b"))),
        ];
        for (input, want) in cases {
            let got = normalize(input);
            assert_eq!(
                got.as_ref().map(|o| o.as_deref()),
                want.as_ref().map(|o| *o),
                "{input}"
            );
        }
    }

    #[test]
    fn uri_keeps_its_query() {
        let mut uri: Uri = "/a/../b?x=/../y".parse().unwrap();
        normalize_uri(&mut uri).unwrap();
        assert_eq!(uri, "/b?x=/../y");
        let mut abs: Uri = "http://h.example/a/./b".parse().unwrap();
        normalize_uri(&mut abs).unwrap();
        assert_eq!(abs, "http://h.example/a/b");
        let mut plain: Uri = "/plain?q".parse().unwrap();
        normalize_uri(&mut plain).unwrap();
        assert_eq!(plain, "/plain?q");
    }
}
