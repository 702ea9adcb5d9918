//! Strict TOML configuration loading: every problem of a file, each with file, line, column,
//! the field's path and what was expected.
//!
//! serde stops at the first error. To report *all* of them, [`parse`] parses the text once into
//! a tree that keeps every key's and value's place ([`DeTable`]), deserializes the target type
//! from a copy of that tree, and on an error records the problem and repairs the tree so the
//! next attempt gets past it:
//!
//! - an unknown key is removed;
//! - a value of the wrong type or an unknown enum value is removed when the field may be
//!   absent, otherwise replaced by a stand-in the field accepts (the first value the error
//!   lists as expected, else a plain `1`, `0`, `""`, `[]`, … — whichever gets past it);
//! - a missing key gets such a stand-in.
//!
//! Stand-ins keep the place of what they replace, so later errors keep their line and column,
//! and array elements are never removed, so `device[3]` stays `device[3]`. The loop ends when
//! the type deserializes (or when a problem cannot be repaired). The type's [`Validate`]
//! implementation then adds the cross-field problems (unknown tag names, duplicate ids, …) to
//! the same list — except within a table (an array element or a top-level section) holding a
//! stand-in, whose checks would judge the stand-in rather than the file.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::path::Path;

use serde::de::DeserializeOwned;
use toml::Spanned;
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
    load_with_text(path).map(|(config, _)| config)
}

/// [`load`], also returning the text that was parsed (read once: what was validated is what is
/// returned, even when the file is being edited).
pub fn load_with_text<T: DeserializeOwned + Validate>(
    path: &Path,
) -> Result<(T, String), ConfigErrors> {
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
    parse(&file, &text).map(|config| (config, text))
}

/// Parses config text; `file` names it in messages.
pub fn parse<T: DeserializeOwned + Validate>(file: &str, text: &str) -> Result<T, ConfigErrors> {
    let problem = |span: Option<Range<usize>>, field: String, message: &str| {
        let (line, column) = span.map_or((0, 0), |s| line_col(text, s.start));
        ConfigError {
            file: file.to_owned(),
            line,
            column,
            field,
            message: message.trim().to_owned(),
        }
    };
    let (doc, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        // A broken document is not deserialized: what the parser recovered is a guess.
        let mut problems: Vec<ConfigError> = syntax
            .iter()
            .map(|e| problem(e.span(), String::new(), e.message()))
            .collect();
        problems.sort_by_key(|p| (p.line, p.column));
        problems.dedup();
        return Err(ConfigErrors(problems));
    }
    let entries = entries_of(&doc);
    let mut repair = Repair {
        work: doc,
        removed: Vec::new(),
        stand_ins: Vec::new(),
        inserted: Vec::new(),
    };
    let mut problems: Vec<ConfigError> = Vec::new();
    let mut seen: Vec<(Option<Range<usize>>, String)> = Vec::new();
    let mut attempt = repair.attempt::<T>();
    // Each round repairs one problem; a file rarely has more mistakes than this.
    for _ in 0..MAX_PROBLEMS {
        let err = match attempt {
            Ok(value) => {
                let mut v = Validator {
                    file,
                    text,
                    entries: &entries,
                    problems: Vec::new(),
                };
                value.validate(&mut v);
                let mut checked = v.problems;
                // Checks of a table holding a stand-in would judge the stand-in.
                checked.retain(|p| !repair.stand_ins.iter().any(|s| within(&p.field, s)));
                problems.extend(checked);
                if problems.is_empty() && seen.is_empty() {
                    return Ok(value);
                }
                break;
            }
            Err(e) => e,
        };
        let message = err.message().trim().to_owned();
        let key = (err.span(), message.clone());
        if seen.contains(&key) {
            break; // no progress
        }
        seen.push(key);
        let Some(span) = err.span() else {
            problems.push(problem(None, String::new(), &message));
            break;
        };
        let entries_now = entries_of(&repair.work);
        let Fixed { field, next, new } = repair.fix::<T>(&entries_now, span.clone(), &message);
        // A problem inside an inserted stand-in is a consequence of the problem that made it.
        let inside_stand_in = repair.inserted.iter().any(|i| {
            field == *i
                || field.starts_with(&format!("{i}."))
                || field.starts_with(&format!("{i}["))
        });
        if new && !inside_stand_in {
            problems.push(problem(Some(span), field, &message));
        }
        match next {
            Some(next) => attempt = next,
            None => break,
        }
    }
    problems.sort_by_key(|p| (p.line, p.column));
    if problems.is_empty() {
        problems.push(problem(
            None,
            String::new(),
            "the configuration could not be read",
        ));
    }
    Err(ConfigErrors(problems))
}

/// At most this many problems are reported for one file.
const MAX_PROBLEMS: usize = 200;

/// Whether `field` lies within the table (array element or top-level section) that holds the
/// stand-in at `stand_in`.
fn within(field: &str, stand_in: &str) -> bool {
    let element = element_of(stand_in);
    field == element
        || field.starts_with(&format!("{element}."))
        || field.starts_with(&format!("{element}["))
}

/// The table a field belongs to for the purpose of cross-field checks: the innermost array
/// element (`device[0].tag[2]` of `device[0].tag[2].type`), else the top-level section.
fn element_of(path: &str) -> &str {
    match path.rfind(']') {
        Some(i) => &path[..=i],
        None => path.split(['.', '[']).next().unwrap_or(path),
    }
}

/// One step from a table or array down to a child.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// A key (or array element) of the document with where it stands.
#[derive(Debug, Clone)]
struct Entry {
    path: String,
    steps: Vec<Step>,
    key_span: Range<usize>,
    value_span: Range<usize>,
    /// Its value is a table.
    table: bool,
}

/// The document being repaired, and what was changed in it.
struct Repair<'i> {
    work: Spanned<DeTable<'i>>,
    /// Bad values removed (they may turn out to be required).
    removed: Vec<Removed<'i>>,
    /// Paths of values replaced or inserted by a stand-in.
    stand_ins: Vec<String>,
    /// Paths of inserted stand-ins (missing keys).
    inserted: Vec<String>,
}

/// A bad value taken out of its table, kept in case the field is required: serde reports a
/// missing field only after every other key of the table, so that is known only later.
struct Removed<'i> {
    table: Vec<Step>,
    key: Spanned<Cow<'i, str>>,
    value: Spanned<DeValue<'i>>,
    path: String,
    /// The error it was removed for.
    message: String,
}

/// What [`Repair::fix`] did.
struct Fixed<T> {
    /// The field the problem is about.
    field: String,
    /// The next attempt, `None` when the problem could not be repaired.
    next: Option<Attempt<T>>,
    /// A new problem (not the late consequence of one already reported).
    new: bool,
}

type Attempt<T> = Result<T, toml::de::Error>;

impl<'i> Repair<'i> {
    fn attempt<T: DeserializeOwned>(&self) -> Attempt<T> {
        T::deserialize(toml::de::Deserializer::from(self.work.clone()))
    }

    /// Repairs the problem `message` at `span`.
    fn fix<T: DeserializeOwned>(
        &mut self,
        entries: &[Entry],
        span: Range<usize>,
        message: &str,
    ) -> Fixed<T> {
        let at = locate(entries, &span);
        let fixed = |field: String, next: Option<Attempt<T>>| Fixed {
            field,
            next,
            new: true,
        };
        if let Some(key) = quoted_after(message, "unknown field ") {
            // The key itself: remove it.
            let Some(e) = at else {
                return fixed(String::new(), None);
            };
            let parent = &e.steps[..e.steps.len().saturating_sub(1)];
            let removed = table_mut(&mut self.work, parent).and_then(|t| t.remove(key.as_str()));
            return fixed(e.path.clone(), removed.map(|_| self.attempt()));
        }
        if let Some(key) = quoted_after(message, "missing field ") {
            let (table, path) = match at {
                Some(e) if e.table => (e.steps.clone(), e.path.clone()),
                Some(e) => (
                    e.steps[..e.steps.len().saturating_sub(1)].to_vec(),
                    parent_path(&e.path).to_owned(),
                ),
                None => (Vec::new(), String::new()),
            };
            if let Some(i) = self
                .removed
                .iter()
                .position(|r| r.table == table && *r.key.get_ref() == key)
            {
                // A bad value removed earlier is required after all: put it back and replace
                // it by a stand-in. Its problem is reported already.
                let r = self.removed.remove(i);
                let mut steps = r.table.clone();
                steps.push(Step::Key(key));
                let value_span = r.value.span();
                if let Some(t) = table_mut(&mut self.work, &r.table) {
                    t.insert(r.key, r.value);
                }
                let next = self.try_stand_ins(&value_span, &r.message, |work, v| {
                    value_mut(work, &steps)
                        .map(|slot| *slot = Spanned::new(value_span.clone(), v.into_inner()))
                });
                if next.is_some() {
                    self.stand_ins.push(r.path.clone());
                }
                return Fixed {
                    field: r.path,
                    next,
                    new: false,
                };
            }
            // The table lacks it: give it a stand-in.
            let field = join(&path, &key);
            let next = self.try_stand_ins(&span, message, |work, v| {
                table_mut(work, &table).map(|t| {
                    t.insert(
                        Spanned::new(span.clone(), Cow::Owned(key.clone())),
                        Spanned::new(span.clone(), v.into_inner()),
                    );
                })
            });
            if next.is_some() {
                self.stand_ins.push(field.clone());
                self.inserted.push(field);
            }
            return fixed(path, next);
        }
        // A bad value: remove it (the field may be optional), else replace it.
        let Some(e) = at.cloned() else {
            return fixed(String::new(), None);
        };
        if let Some(Step::Key(key)) = e.steps.last() {
            let parent = &e.steps[..e.steps.len() - 1];
            if let Some((key, value)) =
                table_mut(&mut self.work, parent).and_then(|t| t.remove_entry(key.as_str()))
            {
                self.removed.push(Removed {
                    table: parent.to_vec(),
                    key,
                    value,
                    path: e.path.clone(),
                    message: message.to_owned(),
                });
                return fixed(e.path, Some(self.attempt()));
            }
        }
        let value_span = e.value_span.clone();
        let next = self.try_stand_ins(&span, message, |work, v| {
            value_mut(work, &e.steps)
                .map(|slot| *slot = Spanned::new(value_span.clone(), v.into_inner()))
        });
        if next.is_some() {
            self.stand_ins.push(e.path.clone());
        }
        fixed(e.path, next)
    }

    /// Puts stand-ins in place with `put` until one gets past the error at `span`; keeps that
    /// one and returns the attempt with it.
    fn try_stand_ins<T: DeserializeOwned>(
        &mut self,
        span: &Range<usize>,
        message: &str,
        put: impl Fn(&mut Spanned<DeTable<'i>>, Spanned<DeValue<'i>>) -> Option<()>,
    ) -> Option<Attempt<T>> {
        let original = self.work.clone();
        for candidate in stand_ins(message) {
            let mut work = original.clone();
            put(&mut work, candidate)?;
            self.work = work;
            let next = self.attempt::<T>();
            let same_place = next
                .as_ref()
                .err()
                .is_some_and(|n| n.span().as_ref() == Some(span));
            if !same_place {
                return Some(next);
            }
        }
        self.work = original;
        None
    }
}

/// Values to try in place of a bad or missing one: what the error says is expected, then one
/// plain value of every TOML type.
fn stand_ins<'i>(message: &str) -> Vec<Spanned<DeValue<'i>>> {
    let mut out = Vec::new();
    if let Some((_, expected)) = message.split_once("expected")
        && let Some(name) = quoted_after(expected, "")
    {
        out.push(Spanned::new(0..0, DeValue::String(Cow::Owned(name))));
    }
    for text in ["1", "0", "1.0", "false", "\"\"", "[]", "{}"] {
        if let Ok(v) = DeValue::parse(text) {
            out.push(v);
        }
    }
    out
}

/// The text between the backquotes following `prefix` (`unknown field `x`` → `x`).
fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let rest = &message[message.find(&format!("{prefix}`"))? + prefix.len() + 1..];
    Some(rest[..rest.find('`')?].to_owned())
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn parent_path(path: &str) -> &str {
    path.rfind(['.', '[']).map_or("", |i| &path[..i])
}

/// The table at `steps` (the root for none).
fn table_mut<'a, 'i>(
    doc: &'a mut Spanned<DeTable<'i>>,
    steps: &[Step],
) -> Option<&'a mut DeTable<'i>> {
    if steps.is_empty() {
        return Some(doc.get_mut());
    }
    match value_mut(doc, steps)?.get_mut() {
        DeValue::Table(t) => Some(t),
        _ => None,
    }
}

/// The value at `steps` (at least one).
fn value_mut<'a, 'i>(
    doc: &'a mut Spanned<DeTable<'i>>,
    steps: &[Step],
) -> Option<&'a mut Spanned<DeValue<'i>>> {
    let (first, rest) = steps.split_first()?;
    let Step::Key(k) = first else { return None };
    let mut v = doc.get_mut().get_mut(k.as_str())?;
    for step in rest {
        v = match (v.get_mut(), step) {
            (DeValue::Table(t), Step::Key(k)) => t.get_mut(k.as_str())?,
            (DeValue::Array(a), Step::Index(i)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(v)
}

fn entries_of(doc: &Spanned<DeTable<'_>>) -> Vec<Entry> {
    let mut out = Vec::new();
    walk_table(doc.get_ref(), "", &[], &mut out);
    out
}

fn walk_table(t: &DeTable<'_>, prefix: &str, steps: &[Step], out: &mut Vec<Entry>) {
    for (k, v) in t.iter() {
        let path = join(prefix, k.get_ref());
        let mut here = steps.to_vec();
        here.push(Step::Key(k.get_ref().to_string()));
        out.push(Entry {
            path: path.clone(),
            steps: here.clone(),
            key_span: k.span(),
            value_span: v.span(),
            table: v.get_ref().is_table(),
        });
        walk_value(v, &path, &here, out);
    }
}

fn walk_value(v: &Spanned<DeValue<'_>>, path: &str, steps: &[Step], out: &mut Vec<Entry>) {
    match v.get_ref() {
        DeValue::Table(t) => walk_table(t, path, steps, out),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let p = format!("{path}[{i}]");
                let mut here = steps.to_vec();
                here.push(Step::Index(i));
                out.push(Entry {
                    path: p.clone(),
                    steps: here.clone(),
                    key_span: item.span(),
                    value_span: item.span(),
                    table: item.get_ref().is_table(),
                });
                walk_value(item, &p, &here, out);
            }
        }
        _ => {}
    }
}

/// The entry an error at `span` is about: one whose key or value is exactly `span` (the
/// deepest), else the one with the smallest extent that holds `span.start`.
fn locate<'e>(entries: &'e [Entry], span: &Range<usize>) -> Option<&'e Entry> {
    let exact = entries
        .iter()
        .filter(|e| e.value_span == *span || e.key_span == *span)
        .max_by_key(|e| e.steps.len());
    exact.or_else(|| innermost_entry(entries, span.start))
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
        protocol: Proto,
        #[serde(default)]
        tag: Vec<Tag>,
    }
    #[derive(Debug, Default, PartialEq, Deserialize)]
    enum Proto {
        #[default]
        #[serde(rename = "modbus-tcp")]
        Tcp,
        #[serde(rename = "opcua")]
        OpcUa,
    }
    /// A required enum and a required number, as a gateway's `[[device]] protocol` is.
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    #[serde(deny_unknown_fields)]
    struct Strict {
        gateway: Gw,
        device: Vec<StrictDev>,
    }
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    #[serde(deny_unknown_fields)]
    struct StrictDev {
        id: String,
        protocol: Proto,
        unit_id: u8,
        #[serde(default)]
        tag: Vec<Tag>,
    }
    impl Validate for Strict {
        fn validate(&self, v: &mut Validator<'_>) {
            for (i, d) in self.device.iter().enumerate() {
                if d.protocol == Proto::Tcp && d.unit_id == 1 {
                    v.error(format!("device[{i}].unit_id"), "suspicious");
                }
            }
        }
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
    fn an_enum_a_type_and_a_key_are_all_reported_even_in_required_fields() {
        let text = "[gateway]\nid = \"gw\"\nbuffer_max_mb = \"big\"\n\n\
                    [[device]]\nid = \"plc\"\nprotocol = \"modbus-tcpp\"\nunit_id = \"one\"\n\
                    \x20 [[device.tag]]\n  name = \"a\"\n  scan_msec = 100\n\n\
                    [[device]]\nid = \"b\"\nprotocol = \"opcua\"\nunit_id = 2\ncolour = 3\n\
                    [[device]]\nprotocol = \"opcua\"\nunit_id = 3\n";
        let errs = parse::<Strict>("c.toml", text).unwrap_err().0;
        let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            errs.iter()
                .map(|e| (e.line, e.field.as_str()))
                .collect::<Vec<_>>(),
            [
                (3, "gateway.buffer_max_mb"),
                (7, "device[0].protocol"),
                (8, "device[0].unit_id"),
                (11, "device[0].tag[0].scan_msec"),
                (17, "device[1].colour"),
                (18, "device[2]"),
            ],
            "{shown:#?}"
        );
        assert!(
            shown[1].starts_with(
                "c.toml:7:12: device[0].protocol: unknown variant `modbus-tcpp`, expected"
            ),
            "{shown:#?}"
        );
        assert!(
            shown[2].contains("invalid type: string \"one\", expected u8"),
            "{shown:#?}"
        );
        assert!(shown[5].contains("missing field `id`"), "{shown:#?}");
        // The stand-ins (`modbus-tcp`, unit_id 1) are not judged by the cross-field checks.
        assert!(
            !shown.iter().any(|s| s.contains("suspicious")),
            "{shown:#?}"
        );
    }

    #[test]
    fn a_missing_section_is_one_problem() {
        let errs = parse::<Strict>(
            "c.toml",
            "[[device]]\nid = \"x\"\nprotocol = \"opcua\"\nunit_id = 2\n",
        )
        .unwrap_err()
        .0;
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].message.contains("missing field `gateway`"),
            "{errs:?}"
        );
    }

    #[test]
    fn every_syntax_error_is_reported() {
        let errs = parse::<Doc>(
            "c.toml",
            "[gateway]\nid = \"g\nx = = 1\n[[device]]\nid = 'a\n",
        )
        .unwrap_err()
        .0;
        assert!(errs.len() >= 2, "{errs:?}");
        assert!(errs.iter().all(|e| e.line > 0), "{errs:?}");
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
