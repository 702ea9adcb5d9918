//! Assembling one code from what a reader sends, bounded by `max_line_len`, and deciding
//! whether the result is a code or a rejected scan. The link decides where a line ends (a
//! terminator byte, the Enter key) and what breaks one (a half-typed code); this module decides
//! what a line is:
//! - longer than `max_line_len` bytes: [`Line::Bad`], reported once when the limit is crossed,
//!   and everything up to the next terminator is discarded (resync);
//! - not UTF-8, or holding control characters other than the GS1 group separator (ASCII 29):
//!   [`Line::Bad`];
//! - marked broken by the link ([`LineBuffer::mark_broken`]): [`Line::Bad`] with that reason;
//! - empty or blank: no scan at all;
//! - otherwise [`Line::Code`], surrounding whitespace trimmed.

/// One framed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Code(String),
    /// The line could not be used; the payload is what we can show of it and why.
    Bad {
        raw: String,
        error: String,
    },
}

/// What [`Line::Bad`] shows of an over-long line, at most.
const SHOWN_OF_LONG_LINE: usize = 64;

/// The line being assembled.
#[derive(Debug)]
pub struct LineBuffer {
    max_len: usize,
    buf: Vec<u8>,
    /// Inside an over-long line (already reported): input is dropped until the next end.
    discarding: bool,
    /// Why the line cannot be trusted, once the link said so (the first reason wins).
    broken: Option<String>,
}

impl LineBuffer {
    /// A buffer for lines of at most `max_len` bytes (at least 1).
    pub fn new(max_len: usize) -> LineBuffer {
        LineBuffer {
            max_len: max_len.max(1),
            buf: Vec::new(),
            discarding: false,
            broken: None,
        }
    }

    /// True when nothing is pending: no byte since the last end, no broken mark.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.broken.is_none() && !self.discarding
    }

    /// Appends one byte; returns the [`Line::Bad`] of an over-long line when this byte crosses
    /// the limit (once per line).
    pub fn push(&mut self, b: u8) -> Option<Line> {
        if self.discarding {
            return None;
        }
        self.buf.push(b);
        if self.buf.len() <= self.max_len {
            return None;
        }
        let shown = &self.buf[..self.buf.len().min(SHOWN_OF_LONG_LINE)];
        let raw = String::from_utf8_lossy(shown).into_owned();
        self.buf.clear();
        self.broken = None;
        self.discarding = true;
        Some(Line::Bad {
            raw,
            error: format!(
                "line longer than {} bytes (truncated here; resynchronizing at the next terminator)",
                self.max_len
            ),
        })
    }

    /// Appends one character (its UTF-8 bytes).
    pub fn push_char(&mut self, c: char) -> Option<Line> {
        let mut utf8 = [0u8; 4];
        let mut over = None;
        for &b in c.encode_utf8(&mut utf8).as_bytes() {
            over = over.or(self.push(b));
        }
        over
    }

    /// Marks the current line as untrustworthy: it ends as [`Line::Bad`] with `why` (the first
    /// reason given is kept).
    pub fn mark_broken(&mut self, why: impl Into<String>) {
        if !self.discarding && self.broken.is_none() {
            self.broken = Some(why.into());
        }
    }

    /// The terminator came: the line as it is, or `None` for an empty line or the rest of an
    /// over-long one.
    pub fn end(&mut self) -> Option<Line> {
        let line = std::mem::take(&mut self.buf);
        let broken = self.broken.take();
        if std::mem::take(&mut self.discarding) {
            return None;
        }
        if let Some(error) = broken {
            return Some(Line::Bad {
                raw: String::from_utf8_lossy(&line).escape_debug().to_string(),
                error,
            });
        }
        finish(line)
    }

    /// The line will never be finished (no terminator came in time, the device went away):
    /// whatever is pending comes out as [`Line::Bad`] with `why`; `None` when nothing is.
    pub fn abandon(&mut self, why: &str) -> Option<Line> {
        if self.is_empty() {
            return None;
        }
        self.mark_broken(why);
        self.end()
    }
}

/// A complete line: a code, a bad line, or nothing (blank).
fn finish(line: Vec<u8>) -> Option<Line> {
    if line.iter().all(|b| b.is_ascii_whitespace()) {
        return None; // an empty line is no scan
    }
    Some(match String::from_utf8(line) {
        Ok(s) if s.chars().any(|c| c.is_control() && c != '\u{1d}') => Line::Bad {
            raw: s.escape_debug().to_string(),
            error: "control characters in the code".to_owned(),
        },
        Ok(s) => Line::Code(s.trim().to_owned()),
        Err(e) => Line::Bad {
            raw: String::from_utf8_lossy(e.as_bytes()).into_owned(),
            error: "not valid UTF-8".to_owned(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(b: &mut LineBuffer, s: &[u8]) -> Vec<Line> {
        s.iter().filter_map(|&x| b.push(x)).collect()
    }

    #[test]
    fn codes_blank_lines_and_gs() {
        let mut b = LineBuffer::new(32);
        assert!(b.is_empty());
        assert!(feed(&mut b, b" SN1 ").is_empty());
        assert!(!b.is_empty());
        assert_eq!(b.end(), Some(Line::Code("SN1".into())));
        assert!(feed(&mut b, b"  ").is_empty());
        assert_eq!(b.end(), None);
        feed(&mut b, b"0112\x1d10AB");
        assert_eq!(b.end(), Some(Line::Code("0112\u{1d}10AB".into())));
    }

    #[test]
    fn over_long_line_is_reported_once_and_resyncs() {
        let mut b = LineBuffer::new(4);
        let bad = feed(&mut b, b"0123456789");
        assert_eq!(bad.len(), 1);
        assert!(
            matches!(&bad[0], Line::Bad { raw, error } if raw == "01234" && error.contains("longer than 4"))
        );
        b.mark_broken("ignored: already reported");
        assert_eq!(b.end(), None);
        feed(&mut b, b"AB");
        assert_eq!(b.end(), Some(Line::Code("AB".into())));
    }

    #[test]
    fn broken_and_abandoned_lines_carry_the_reason() {
        let mut b = LineBuffer::new(32);
        assert_eq!(b.abandon("timeout"), None, "nothing pending");
        feed(&mut b, b"SN0");
        b.mark_broken("first");
        b.mark_broken("second");
        assert_eq!(
            b.end(),
            Some(Line::Bad {
                raw: "SN0".into(),
                error: "first".into()
            })
        );
        feed(&mut b, b"LOT");
        assert_eq!(
            b.abandon("no terminator"),
            Some(Line::Bad {
                raw: "LOT".into(),
                error: "no terminator".into()
            })
        );
        assert!(b.is_empty());
        assert_eq!(b.push_char('ä'), None);
        assert_eq!(b.end(), Some(Line::Code("ä".into())));
    }

    #[test]
    fn garbage_is_reported() {
        let mut b = LineBuffer::new(64);
        feed(&mut b, b"\xff\xfe\x01");
        assert!(matches!(b.end(), Some(Line::Bad { error, .. }) if error.contains("UTF-8")));
        feed(&mut b, b"AB\x07C");
        assert!(matches!(b.end(), Some(Line::Bad { error, .. }) if error.contains("control")));
    }
}
