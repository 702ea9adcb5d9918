//! `data_dir/running.toml`: the config the daemon runs now, written when it starts and after
//! each applied reload, so that `threadline-gateway check --config new.toml --against running`
//! compares a new file with what the line really runs (not with what the file said last week).
//!
//! The file is the applied config text under one header comment line; mode 0600 (the config
//! may name key files and hold a broker password), replaced atomically.

use std::path::{Path, PathBuf};

/// The file's name in `data_dir`.
pub const FILE: &str = "running.toml";
const HEADER: &str = "# threadline-gateway running config:";

/// What `running.toml` says.
#[derive(Debug, Clone)]
pub struct Running {
    /// The daemon's process id.
    pub pid: u32,
    /// When this config was applied (RFC 3339).
    pub applied: String,
    /// The file it was read from.
    pub source: String,
    /// The config text.
    pub text: String,
}

impl Running {
    /// Whether the process that wrote it still runs (Linux: `/proc/PID`).
    pub fn alive(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pid)).exists()
    }

    /// `pid 123, applied 2026-12-03T08:00:00Z from /etc/threadline/gateway.toml`.
    pub fn describe(&self) -> String {
        format!(
            "pid {}{}, applied {} from {}",
            self.pid,
            if self.alive() { "" } else { " (not running)" },
            self.applied,
            self.source
        )
    }
}

/// The path of `running.toml` in `data_dir`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// Records `text` as the running config of this process.
pub fn write(data_dir: &Path, source: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let applied = threadline_shared::time::format(&threadline_shared::time::now());
    let header = format!(
        "{HEADER} pid {} applied {applied} from {}\n",
        std::process::id(),
        source.display()
    );
    let target = path(data_dir);
    let tmp = data_dir.join(format!(".{FILE}.tmp"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp)?;
    f.write_all(header.as_bytes())?;
    f.write_all(text.as_bytes())?;
    // No fsync: a diagnostic copy (the config file itself is the source of truth), and the
    // daemon writes it on its async runtime.
    std::fs::rename(&tmp, &target)
}

/// Reads `running.toml` of `data_dir`.
pub fn read(data_dir: &Path) -> Result<Running, String> {
    let p = path(data_dir);
    let all = std::fs::read_to_string(&p).map_err(|e| {
        format!(
            "{}: {e} (the gateway writes it when it starts; is it running with this data_dir?)",
            p.display()
        )
    })?;
    let (first, text) = all.split_once('\n').unwrap_or((all.as_str(), ""));
    let rest = first
        .strip_prefix(HEADER)
        .ok_or_else(|| format!("{}: not written by threadline-gateway", p.display()))?;
    // " pid N applied TS from PATH"
    let parse = || -> Option<Running> {
        let rest = rest.trim_start().strip_prefix("pid ")?;
        let (pid, rest) = rest.split_once(" applied ")?;
        let (applied, source) = rest.split_once(" from ")?;
        Some(Running {
            pid: pid.parse().ok()?,
            applied: applied.to_owned(),
            source: source.to_owned(),
            text: text.to_owned(),
        })
    };
    parse().ok_or_else(|| format!("{}: unreadable header line", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_and_read_back_with_its_header_and_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[gateway]\nid = \"gw\"\n";
        write(dir.path(), Path::new("/etc/gw.toml"), text).unwrap();
        let r = read(dir.path()).unwrap();
        assert_eq!(r.pid, std::process::id());
        assert_eq!(r.source, "/etc/gw.toml");
        assert_eq!(r.text, text);
        assert!(r.alive());
        assert!(
            r.describe()
                .starts_with(&format!("pid {}, applied 20", r.pid))
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_missing_file_says_where_it_looked() {
        let dir = tempfile::tempdir().unwrap();
        let e = read(dir.path()).unwrap_err();
        assert!(
            e.contains("running.toml") && e.contains("is it running"),
            "{e}"
        );
    }
}
