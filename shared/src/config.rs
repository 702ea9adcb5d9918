//! Strict TOML configuration loading: every problem of a file, each with file, line, column,
//! the field's path and what was expected.
//!
//! serde stops at the first error. To report *all* of them, [`parse`] deserializes, and on an
//! error finds the key the error points at, records the problem, blanks that key/value out of
//! a working copy of the text (with spaces, so every other byte keeps its line and column) and
//! tries again — until the file deserializes or an error cannot be isolated to one key.
//! After a successful deserialization the type's [`Validate`] implementation adds the
//! cross-field problems (unknown tag names, duplicate ids, …) to the same list.

use std::fmt;
use std::ops::Range;
use std::path::Path;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based; 0 when the problem has no place in the file (e.g. the file cannot be read).
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// Dotted path of the field, e.g. `device[0].tag[2].scan_ms`; empty for the whole file.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.field.is_empty()) {
            (0, true) => write!(f, "{}: {}", self.file, self.message),
            (0, false) => write!(f, "{}: {}: {}", self.file, self.field, self.message),
            (_, true) => write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            ),
            (_, false) => {
                write!(
                    f,
                    "{}:{}:{}: {}: {}",
                    self.file, self.line, self.column, self.field, self.message
                )
            }
        }
    }
}

/// Every problem found in a config file (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} problem{} in the configuration:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Cross-field checks of a deserialized config.
pub trait Validate {
    /// Reports every problem through `v`; the default checks nothing.
    fn validate(&self, v: &mut Validator<'_>) {
        let _ = v;
    }
}

/// Collects problems found after deserialization, placing them by field path.
pub struct Validator<'a> {
    file: &'a str,
    text: &'a str,
    entries: &'a [Entry],
    problems: Vec<ConfigError>,
}

impl Validator<'_> {
    /// Records a problem with the field at `path` (e.g. `station[1].capture[0].tag`).
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let field = path.into();
        let (line, column) = locate_path(self.entries, &field)
            .map(|off| line_col(self.text, off))
            .unwrap_or((0, 0));
        self.problems.push(ConfigError {
            file: self.file.to_owned(),
            line,
            column,
            field,
            message: message.into(),
        });
    }

    /// Number of problems recorded so far.
    pub fn problem_count(&self) -> usize {
        self.problems.len()
    }
}

/// Reads and parses a config file.
pub fn load<T: DeserializeOwned + Validate>(path: &Path) -> Result<T, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: file.clone(),
            line: 0,
            column: 0,
            field: String::new(),
            message: format!("cannot read the file: {e}"),
        }])
    })?;
    parse(&file, &text)
}

/// Parses config text; `file` names it in messages.
pub fn parse<T: DeserializeOwned + Validate>(file: &str, text: &str) -> Result<T, ConfigErrors> {
    let mut work = text.to_owned();
    let mut problems: Vec<ConfigError> = Vec::new();
    let mut seen: Vec<(Option<Range<usize>>, String)> = Vec::new();
    // Each round removes one offending key; a file rarely has more mistakes than this.
    for _ in 0..200 {
        let err = match toml::from_str::<T>(&work) {
            Ok(value) => {
                // With the offending keys blanked out the rest is usable: check it too, so that
                // one run reports structural and cross-field problems together.
                let entries = document_entries(text);
                let mut v = Validator {
                    file,
                    text,
                    entries: &entries,
                    problems: Vec::new(),
                };
                value.validate(&mut v);
                problems.extend(v.problems);
                if problems.is_empty() {
                    return Ok(value);
                }
                break;
            }
            Err(e) => e,
        };
        let span = err.span();
        let message = err.message().trim().to_owned();
        if seen.contains(&(span.clone(), message.clone())) {
            break;
        }
        seen.push((span.clone(), message.clone()));

        // Empty on a syntax error: it is reported below and there is nothing to isolate.
        let entries = document_entries(&work);
        let at = span.as_ref().map(|s| s.start).unwrap_or(0);
        let entry = innermost_entry(&entries, at);
        let (line, column) = if span.is_some() {
            line_col(text, at)
        } else {
            (0, 0)
        };
        let field = entry.map(|e| e.path.clone()).unwrap_or_default();
        // A missing field in a table whose other key we already removed is a consequence of
        // that first problem, not a new one.
        let consequence = message.starts_with("missing field")
            && problems
                .iter()
                .any(|p| !field.is_empty() && p.field.starts_with(&field) && p.field != field);
        let missing = message.starts_with("missing field");
        if !consequence {
            problems.push(ConfigError {
                file: file.to_owned(),
                line,
                column,
                field,
                message,
            });
        }
        match entry {
            // A missing field cannot be blanked away; removing the whole table instead would
            // renumber the array elements after it and misname their problems.
            Some(_) if missing => break,
            Some(e) if span.is_some() => {
                // The key itself and, for a [table] or [[array]] header, every key beneath it.
                let below = |p: &str| {
                    p == e.path
                        || p.starts_with(&format!("{}.", e.path))
                        || p.starts_with(&format!("{}[", e.path))
                };
                for d in entries.iter().filter(|d| below(&d.path)) {
                    blank(
                        &mut work,
                        d.key_span.start.min(d.value_span.start)
                            ..d.key_span.end.max(d.value_span.end),
                    );
                }
            }
            _ => break,
        }
    }
    problems.sort_by_key(|p| (p.line, p.column));
    if problems.is_empty() {
        problems.push(ConfigError {
            file: file.to_owned(),
            line: 0,
            column: 0,
            field: String::new(),
            message: "the configuration could not be read".to_owned(),
        });
    }
    Err(ConfigErrors(problems))
}

/// A key (or array element) of the document with where it stands.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: String,
    pub key_span: Range<usize>,
    pub value_span: Range<usize>,
}

fn document_entries(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    if let Ok(root) = DeTable::parse(text) {
        walk_table(root.get_ref(), "", &mut out);
    }
    out
}

fn walk_table(t: &DeTable<'_>, prefix: &str, out: &mut Vec<Entry>) {
    for (k, v) in t.iter() {
        let path = if prefix.is_empty() {
            k.get_ref().to_string()
        } else {
            format!("{prefix}.{}", k.get_ref())
        };
        out.push(Entry {
            path: path.clone(),
            key_span: k.span(),
            value_span: v.span(),
        });
        walk_value(v, &path, out);
    }
}

fn walk_value(v: &toml::Spanned<DeValue<'_>>, path: &str, out: &mut Vec<Entry>) {
    match v.get_ref() {
        DeValue::Table(t) => walk_table(t, path, out),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let p = format!("{path}[{i}]");
                out.push(Entry {
                    path: p.clone(),
                    key_span: item.span(),
                    value_span: item.span(),
                });
                walk_value(item, &p, out);
            }
        }
        _ => {}
    }
}

/// The entry with the smallest extent that holds offset `at` (in its key or its value).
fn innermost_entry(entries: &[Entry], at: usize) -> Option<&Entry> {
    entries
        .iter()
        .filter(|e| {
            e.key_span.contains(&at) || e.value_span.contains(&at) || e.key_span.start == at
        })
        .min_by_key(|e| {
            let start = e.key_span.start.min(e.value_span.start);
            let end = e.key_span.end.max(e.value_span.end);
            // On a tie (an array and its element share the header's span) the deeper path wins.
            (end - start, std::cmp::Reverse(e.path.len()))
        })
}

fn locate_path(entries: &[Entry], path: &str) -> Option<usize> {
    // The exact path, or its closest ancestor that exists in the file (a defaulted field).
    let mut p = path;
    loop {
        if let Some(e) = entries.iter().find(|e| e.path == p) {
            return Some(e.key_span.start);
        }
        let cut = p.rfind(['.', '['])?;
        p = &p[..cut];
    }
}

fn blank(work: &mut String, range: Range<usize>) {
    let end = range.end.min(work.len());
    let start = range.start.min(end);
    let replaced: String = work[start..end]
        .chars()
        .map(|c| if c == '\n' || c == '\r' { c } else { ' ' })
        .collect();
    // Non-ASCII characters become one space each; pad so that later offsets do not move.
    let pad = (end - start).saturating_sub(replaced.len());
    work.replace_range(start..end, &(replaced + &" ".repeat(pad)));
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        gateway: Gw,
        #[serde(default)]
        device: Vec<Dev>,
    }
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    #[serde(deny_unknown_fields)]
    struct Gw {
        id: String,
        #[serde(default)]
        buffer_max_mb: u64,
    }
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    #[serde(deny_unknown_fields)]
    struct Dev {
        id: String,
        #[serde(default)]
        tag: Vec<Tag>,
    }
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    #[serde(deny_unknown_fields)]
    struct Tag {
        name: String,
        #[serde(default)]
        scan_ms: u64,
    }
    impl Validate for Doc {
        fn validate(&self, v: &mut Validator<'_>) {
            for (i, d) in self.device.iter().enumerate() {
                if d.id.is_empty() {
                    v.error(format!("device[{i}].id"), "must not be empty");
                }
            }
        }
    }

    #[test]
    fn reports_every_mistake_with_place_and_field() {
        let text = "[gateway]\nid = \"gw\"\nbuffer_max_mb = \"big\"\n\n[[device]]\nid = \"plc\"\n  [[device.tag]]\n  name = \"a\"\n  scan_msec = 100\n\n[[device]]\nid = \"x\"\ncolour = 3\n";
        let errs = parse::<Doc>("line-1.toml", text).unwrap_err().0;
        let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(errs.len(), 3, "{shown:#?}");
        assert_eq!(errs[0].field, "gateway.buffer_max_mb");
        assert_eq!((errs[0].line, errs[0].column), (3, 17));
        assert!(
            errs[0].message.contains("invalid type"),
            "{}",
            errs[0].message
        );
        assert_eq!(errs[1].field, "device[0].tag[0].scan_msec");
        assert_eq!((errs[1].line, errs[1].column), (9, 3));
        assert!(
            errs[1].message.contains("unknown field `scan_msec`"),
            "{}",
            errs[1].message
        );
        assert!(
            errs[1].message.contains("scan_ms"),
            "lists the expected fields: {}",
            errs[1].message
        );
        assert_eq!(errs[2].field, "device[1].colour");
        assert_eq!(errs[2].line, 13);
        assert!(
            shown[1].starts_with("line-1.toml:9:3: device[0].tag[0].scan_msec: unknown field"),
            "{}",
            shown[1]
        );
    }

    #[test]
    fn validation_problems_are_placed_by_path() {
        let text = "[gateway]\nid = \"gw\"\n[[device]]\nid = \"\"\n";
        let errs = parse::<Doc>("c.toml", text).unwrap_err().0;
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].to_string(),
            "c.toml:4:1: device[0].id: must not be empty"
        );
    }

    #[test]
    fn syntax_error_is_reported_with_position() {
        let errs = parse::<Doc>("c.toml", "[gateway\nid = 1\n").unwrap_err().0;
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, 1, "{:?}", errs[0]);
    }

    #[test]
    fn missing_required_field_names_the_table() {
        let errs = parse::<Doc>(
            "c.toml",
            "[gateway]\nid = \"g\"\n[[device]]\n[[device.tag]]\nname = \"t\"\n",
        )
        .unwrap_err()
        .0;
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].message.contains("missing field `id`"),
            "{:?}",
            errs[0]
        );
        assert_eq!(errs[0].field, "device[0]");
    }
}
