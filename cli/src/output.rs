//! Rendering command results: aligned tables for people, JSON for scripts.
//!
//! Every command produces one value implementing [`Render`] and hands it to [`emit`], so each
//! invocation writes exactly one table or one JSON document to stdout. The JSON shapes are the
//! serde structs in the command modules; they are part of gwctl's interface (see the crate
//! docs) and change only by adding fields.
//!
//! Problems (an unhealthy endpoint, a disconnected or lagging node) are flagged with
//! [`Highlight::flag`]: a plain `! ` marker always, so scripts and tests reading piped output can
//! find them, and ANSI red on top only when stdout is a terminal and `NO_COLOR` is not set.

use std::ffi::OsStr;
use std::io::{IsTerminal, Write};

use serde::Serialize;

/// How results are printed (`-o/--output`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns and one-line confirmations, for people.
    Table,
    /// One pretty-printed JSON document, for scripts.
    Json,
    /// One YAML document (the same shape as JSON); the default of `export`.
    Yaml,
}

/// How a successful invocation ended, for the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done (exit 0).
    Done,
    /// `apply --dry-run` found changes (exit 2, like `terraform plan -detailed-exitcode`).
    Changes,
}

/// A command result that can be shown either way.
pub trait Render: Serialize {
    /// The human form, ending with a newline.
    fn human(&self) -> String;
}

/// Writes `value` to `out` in `format`: one table/line or one JSON document.
pub fn emit(format: OutputFormat, value: &impl Render, out: &mut dyn Write) -> std::io::Result<()> {
    match format {
        OutputFormat::Table => out.write_all(value.human().as_bytes())?,
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, value)?;
            out.write_all(b"\n")?;
        }
        OutputFormat::Yaml => out.write_all(yaml(value).as_bytes())?,
    }
    out.flush()
}

/// `value` as a YAML document. Every value gwctl prints is plain data (strings, numbers,
/// lists, maps), which always serialises; an error would be a bug, shown rather than hidden.
pub fn yaml(value: &impl Serialize) -> String {
    serde_saphyr::to_string(value).unwrap_or_else(|e| format!("# cannot write YAML: {e}\n"))
}

/// Whether flagged cells are also coloured. Decided once per invocation, for stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Highlight {
    /// Marker only: output is piped or redirected, or `NO_COLOR` asks for no colour.
    #[default]
    Plain,
    /// Marker in ANSI red: a person is reading a terminal.
    Color,
}

/// The marker that leads every flagged cell, coloured or not.
pub const MARK: &str = "! ";

const RED: &str = "\x1b[31m";
const RESET: &str = "\x1b[0m";

impl Highlight {
    /// Colour when stdout is a terminal, unless `NO_COLOR` is set to anything non-empty
    /// (<https://no-color.org>) or `TERM=dumb`.
    pub fn for_stdout() -> Self {
        Self::choose(
            std::io::stdout().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
            std::env::var_os("TERM").as_deref(),
        )
    }

    /// [`Highlight::for_stdout`]'s rule, given what it looks at.
    fn choose(terminal: bool, no_color: Option<&OsStr>, term: Option<&OsStr>) -> Self {
        let no_color = no_color.is_some_and(|v| !v.is_empty());
        let dumb = term.is_some_and(|t| t == "dumb");
        if terminal && !no_color && !dumb {
            Highlight::Color
        } else {
            Highlight::Plain
        }
    }

    /// `text` as a table cell: flagged (`! text`, red on a terminal) when `bad`, else as is.
    pub fn flag(self, text: &str, bad: bool) -> String {
        match (bad, self) {
            (false, _) => text.to_string(),
            (true, Highlight::Plain) => format!("{MARK}{text}"),
            (true, Highlight::Color) => format!("{RED}{MARK}{text}{RESET}"),
        }
    }
}

/// Width of `cell` as shown: characters, not counting ANSI colour sequences (`ESC [ … m`).
fn visible_width(cell: &str) -> usize {
    let mut width = 0;
    let mut chars = cell.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // Skip through the sequence's final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            width += 1;
        }
    }
    width
}

/// A text table whose columns are as wide as their widest cell.
pub struct Table {
    rows: Vec<Vec<String>>,
}

/// Space between columns: two, so that cells containing single spaces stay readable.
const GAP: &str = "  ";

impl Table {
    /// Starts a table with its header row (conventionally upper case).
    pub fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// Appends a row; it should have as many cells as the header.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Lays the table out, one line per row, without trailing spaces.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(visible_width(cell));
            }
        }
        let mut text = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str(GAP);
                }
                line.push_str(cell);
                let pad = widths[i] - visible_width(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// Lines of `label: value`, with the values aligned: the detail view of one object.
pub fn details(fields: &[(&str, String)]) -> String {
    let width = fields
        .iter()
        .map(|(label, _)| label.chars().count() + 1)
        .max()
        .unwrap_or(0);
    let mut text = String::new();
    for (label, value) in fields {
        let label = format!("{label}:");
        // Multi-line values continue under the first line's value column.
        for (i, line) in value.split('\n').enumerate() {
            let lead = if i == 0 { label.as_str() } else { "" };
            text.push_str(format!("{lead:width$}{GAP}{line}").trim_end());
            text.push('\n');
        }
    }
    text
}

/// Shows an empty string as `-`, so a table cell is never blank.
pub fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_string()
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_the_widest_cell() {
        let mut t = Table::new(&["NAME", "PREFIX", "ENDPOINTS"]);
        t.row(vec!["a".into(), "/api/long".into(), "2".into()]);
        t.row(vec!["longer-name".into(), "/".into(), "".into()]);
        assert_eq!(
            t.render(),
            "NAME         PREFIX     ENDPOINTS\n\
             a            /api/long  2\n\
             longer-name  /\n"
        );
    }

    #[test]
    fn header_only_table_is_one_line() {
        assert_eq!(Table::new(&["A", "BB"]).render(), "A  BB\n");
    }

    #[test]
    fn width_counts_characters_not_bytes() {
        let mut t = Table::new(&["X", "Y"]);
        t.row(vec!["é".into(), "1".into()]);
        assert_eq!(t.render(), "X  Y\né  1\n");
    }

    #[test]
    fn details_align_values_and_continue_lines() {
        let text = details(&[
            ("name", "demo".into()),
            ("endpoints", "http://a:1\nhttp://b:2".into()),
            ("hosts", "".into()),
        ]);
        assert_eq!(
            text,
            "name:       demo\n\
             endpoints:  http://a:1\n\
             \x20           http://b:2\n\
             hosts:\n"
        );
    }

    #[test]
    fn flags_are_marked_when_plain_and_red_on_a_terminal() {
        assert_eq!(Highlight::Plain.flag("ok", false), "ok");
        assert_eq!(Highlight::Color.flag("ok", false), "ok");
        assert_eq!(Highlight::Plain.flag("down", true), "! down");
        assert_eq!(Highlight::Color.flag("down", true), "\x1b[31m! down\x1b[0m");
    }

    #[test]
    fn colour_only_on_a_terminal_that_wants_it() {
        let os = |s: &'static str| Some(OsStr::new(s));
        let cases = [
            (true, None, os("xterm-256color"), Highlight::Color),
            (true, None, None, Highlight::Color),
            (true, os(""), os("xterm"), Highlight::Color),
            (true, os("1"), os("xterm"), Highlight::Plain),
            (true, None, os("dumb"), Highlight::Plain),
            (false, None, os("xterm"), Highlight::Plain),
        ];
        for (terminal, no_color, term, want) in cases {
            assert_eq!(
                Highlight::choose(terminal, no_color, term),
                want,
                "{terminal} {no_color:?} {term:?}"
            );
        }
    }

    #[test]
    fn colour_codes_take_no_width() {
        let mut t = Table::new(&["STATE", "N"]);
        t.row(vec![Highlight::Color.flag("down", true), "1".into()]);
        t.row(vec!["in-sync".into(), "2".into()]);
        assert_eq!(
            t.render(),
            "STATE    N\n\x1b[31m! down\x1b[0m   1\nin-sync  2\n"
        );
    }

    #[derive(Serialize)]
    struct Sample {
        name: &'static str,
    }
    impl Render for Sample {
        fn human(&self) -> String {
            format!("sample {}\n", self.name)
        }
    }

    #[test]
    fn emit_writes_one_document() {
        let mut out = Vec::new();
        emit(OutputFormat::Table, &Sample { name: "x" }, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "sample x\n");

        let mut out = Vec::new();
        emit(OutputFormat::Json, &Sample { name: "x" }, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, serde_json::json!({"name": "x"}));
    }
}
