//! [`Secret`]: private keys, tokens and passwords. Its `Debug` prints `***` and it has no
//! `Display`, so a secret cannot reach a log line, an error message or an answer by accident;
//! the one way to the bytes is [`Secret::expose`], which is easy to grep for.

/// A secret string (a PEM private key, a bearer token).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must use it (a TLS config, a header).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether it is empty (an empty token means "not set").
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{:?}", Some(&s)), "Some(***)");
        assert_eq!(s.expose(), "hunter2");
    }
}
