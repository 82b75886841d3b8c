//! Finding `pg_dump`/`pg_restore` and checking that they can handle the server.
//!
//! `pg_dump` can dump servers of its own major version or older, never newer, and `pg_restore`
//! must be at least as new as the `pg_dump` that wrote an archive. Both are checked up front,
//! with a message that says which version is needed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::PgError;
use crate::config::{Reader, vars};

/// Where the tools come from.
#[derive(Debug, Clone)]
pub struct PgTools {
    /// The directory holding them; `None` = found through `PATH`.
    pub bin_dir: Option<PathBuf>,
}

/// A tool's `--version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolVersion {
    /// The whole line, e.g. `pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)`.
    pub text: String,
    /// Comparable major version: 1500 for 15.x, 906 for 9.6.x (see [`show_major`]).
    pub major: u32,
}

impl PgTools {
    /// Reads `LIFEBOAT_PG_BIN_DIR` (refused when it holds no `pg_dump`) and locates the tools.
    pub fn read(r: &mut Reader<'_>) -> Option<Self> {
        let configured = r.text(&vars::PG_BIN_DIR).map(PathBuf::from);
        if let Some(dir) = &configured
            && !dir.join("pg_dump").is_file()
        {
            r.problem(vars::PG_BIN_DIR.name, format!("{} has no pg_dump", dir.display()));
            return None;
        }
        Some(Self::locate(configured.as_deref()))
    }

    /// `configured` (`LIFEBOAT_PG_BIN_DIR`), else the newest `/usr/lib/postgresql/*/bin`, else `PATH`.
    pub fn locate(configured: Option<&Path>) -> Self {
        if let Some(dir) = configured {
            return Self { bin_dir: Some(dir.to_path_buf()) };
        }
        Self { bin_dir: newest_debian_bin_dir(Path::new("/usr/lib/postgresql")) }
    }

    /// The path (or bare name, for `PATH` lookup) of `tool`.
    pub fn path(&self, tool: &str) -> PathBuf {
        match &self.bin_dir {
            Some(dir) => dir.join(tool),
            None => PathBuf::from(tool),
        }
    }

    /// Runs `tool --version`.
    pub async fn version(&self, tool: &str) -> Result<ToolVersion, PgError> {
        let path = self.path(tool);
        let run = tokio::process::Command::new(&path).arg("--version").kill_on_drop(true).output();
        let out = match tokio::time::timeout(Duration::from_secs(30), run).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => {
                return Err(PgError::Tool {
                    tool: tool.to_owned(),
                    message: format!(
                        "cannot run {} ({e}); install the PostgreSQL client tools or set LIFEBOAT_PG_BIN_DIR",
                        path.display()
                    ),
                });
            }
            Err(_) => {
                return Err(PgError::Tool {
                    tool: tool.to_owned(),
                    message: "--version did not answer within 30 s".into(),
                });
            }
        };
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        match (out.status.success(), parse_major(&text)) {
            (true, Some(major)) => Ok(ToolVersion { text, major }),
            _ => Err(PgError::Tool {
                tool: tool.to_owned(),
                message: format!("{} --version answered {text:?}, which is not a PostgreSQL version", path.display()),
            }),
        }
    }
}

fn newest_debian_bin_dir(root: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(root).ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version = parse_dotted(&name)?;
            let bin = e.path().join("bin");
            bin.join("pg_dump").is_file().then_some((version, bin))
        })
        .max_by_key(|(v, _)| *v)
        .map(|(_, bin)| bin)
}

/// `15` → 1500, `15.20` → 1500, `9.6.24` → 906, `16beta1` → 1600.
fn parse_dotted(v: &str) -> Option<u32> {
    let mut nums = v.split('.').map(|p| p.chars().take_while(char::is_ascii_digit).collect::<String>());
    let first: u32 = nums.next()?.parse().ok()?;
    if first >= 10 {
        Some(first * 100)
    } else {
        let second: u32 = nums.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        Some(first * 100 + second)
    }
}

/// The comparable major version in a `--version` line: `pg_dump (PostgreSQL) 15.20 (Debian …)` → 1500.
pub fn parse_major(line: &str) -> Option<u32> {
    let after = line.split_once(')').map_or(line, |(_, rest)| rest);
    after.split_whitespace().find(|w| w.starts_with(|c: char| c.is_ascii_digit())).and_then(parse_dotted)
}

/// The comparable major version of `server_version_num` (150020 → 1500, 90624 → 906).
pub fn server_major(version_num: u32) -> u32 {
    if version_num >= 100_000 { version_num / 10_000 * 100 } else { version_num / 100 }
}

/// Shows a comparable major version the way PostgreSQL writes it (1500 → 15, 906 → 9.6).
pub fn show_major(major: u32) -> String {
    if major >= 1000 { (major / 100).to_string() } else { format!("{}.{}", major / 100, major % 100) }
}

/// Refuses a `pg_dump` older than the server.
pub fn check_dump_version(tool: &ToolVersion, server_version: &str, server_major: u32) -> Result<(), PgError> {
    if tool.major >= server_major {
        return Ok(());
    }
    let need = show_major(server_major);
    Err(PgError::Tool {
        tool: "pg_dump".into(),
        message: format!(
            "{} cannot dump this server (PostgreSQL {server_version}): pg_dump must be version {need} or newer. \
             Install the PostgreSQL {need} client tools (Debian: postgresql-client-{need}) and, if they are not found \
             automatically, point LIFEBOAT_PG_BIN_DIR at their bin directory",
            tool.text
        ),
    })
}

/// Refuses a `pg_restore` older than the `pg_dump` that wrote the archive.
pub fn check_restore_version(tool: &ToolVersion, pg_dump_version: &str) -> Result<(), PgError> {
    let Some(needed) = parse_major(pg_dump_version) else {
        return Ok(());
    };
    if tool.major >= needed {
        return Ok(());
    }
    let need = show_major(needed);
    Err(PgError::Tool {
        tool: "pg_restore".into(),
        message: format!(
            "{} cannot read an archive written by {pg_dump_version}: pg_restore must be version {need} or newer. \
             Install the PostgreSQL {need} client tools and point LIFEBOAT_PG_BIN_DIR at their bin directory",
            tool.text
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_major("pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"), Some(1500));
        assert_eq!(parse_major("pg_restore (PostgreSQL) 17.2"), Some(1700));
        assert_eq!(parse_major("pg_dump (PostgreSQL) 9.6.24"), Some(906));
        assert_eq!(parse_major("pg_dump (PostgreSQL) 18beta1"), Some(1800));
        assert_eq!(parse_major("hello"), None);
        assert_eq!(server_major(150_020), 1500);
        assert_eq!(server_major(90_624), 906);
        assert_eq!(show_major(906), "9.6");
        assert_eq!(show_major(1500), "15");
    }

    #[test]
    fn old_pg_dump_is_refused_with_the_needed_version() {
        let tool = ToolVersion { text: "pg_dump (PostgreSQL) 14.9".into(), major: 1400 };
        let e = check_dump_version(&tool, "16.4", 1600).expect_err("too old");
        let m = e.to_string();
        assert!(m.contains("must be version 16 or newer") && m.contains("postgresql-client-16"), "{m}");
        assert!(check_dump_version(&tool, "14.1", 1400).is_ok());
        assert!(check_dump_version(&tool, "9.6.3", 906).is_ok());
        let restore = ToolVersion { text: "pg_restore (PostgreSQL) 15.2".into(), major: 1500 };
        assert!(check_restore_version(&restore, "pg_dump (PostgreSQL) 15.20").is_ok());
        let e = check_restore_version(&restore, "pg_dump (PostgreSQL) 17.0").expect_err("too old");
        assert!(e.to_string().contains("version 17 or newer"), "{e}");
    }

    #[test]
    fn newest_installed_version_wins() {
        let root = tempfile::tempdir().expect("tmp");
        for v in ["9.6", "13", "15", "notaversion"] {
            let bin = root.path().join(v).join("bin");
            std::fs::create_dir_all(&bin).expect("mkdir");
            std::fs::write(bin.join("pg_dump"), "").expect("write");
        }
        std::fs::create_dir_all(root.path().join("16/bin")).expect("no pg_dump in 16");
        assert_eq!(newest_debian_bin_dir(root.path()), Some(root.path().join("15/bin")));
    }
}
