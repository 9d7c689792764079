//! Trust checks on the spool's own paths. The daemon usually runs as root;
//! a local user who could plant a symlink or a file in the spool could make
//! it read, overwrite or delete files anywhere.
//!
//! Invariant: every spool component the process uses (root, `tmp/`,
//! `queue/`, `failed/`, `dry-run/`, the lock file) is checked with `lstat`:
//! not a symlink, owned by the process's effective uid, not writable by
//! group or others. Anything else is refused with the command that fixes it.
//! One exception, for systemd's `DynamicUser` state directory
//! (`/var/lib/postrelay -> private/postrelay`): the root itself may be a
//! symlink that only root or we could have made (owned by root or us, in a
//! directory others cannot write); it is resolved once at open and the
//! resolved directory is checked like any other.

use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::SpoolError;

/// What kind of object a component must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// The uid this process acts as.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The spool root to use: `root` itself, or the directory a trusted
/// symlink at `root` points to (see the module header). Not checked yet.
pub fn resolve_root(root: &Path) -> Result<PathBuf, SpoolError> {
    let meta = match fs::symlink_metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(root.to_path_buf()),
        Err(e) => return Err(SpoolError::Io(e)),
    };
    if !meta.file_type().is_symlink() {
        return Ok(root.to_path_buf());
    }
    let parent = match root.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent_mode = fs::metadata(parent)
        .map_err(SpoolError::Io)?
        .permissions()
        .mode();
    let owner_ok = meta.uid() == 0 || meta.uid() == euid();
    let parent_ok = parent_mode & 0o022 == 0 || parent_mode & 0o1000 != 0;
    if !(owner_ok && parent_ok) {
        return Err(SpoolError::Untrusted {
            path: root.to_path_buf(),
            fix: format!(
                "it is a symbolic link another user could have made or replaced; set spool.dir to the real directory ({})",
                fs::canonicalize(root)
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| "not found".into())
            ),
        });
    }
    fs::canonicalize(root).map_err(SpoolError::Io)
}

/// Refuses `path` unless it is a real directory or file (per `kind`) owned
/// by this process's uid and not writable by group or others.
pub fn check(path: &Path, kind: Kind) -> Result<(), SpoolError> {
    let meta = fs::symlink_metadata(path).map_err(SpoolError::Io)?;
    judge(
        path,
        kind,
        meta.file_type().is_symlink(),
        meta.is_dir(),
        meta.uid(),
        meta.permissions().mode(),
    )
}

/// The same checks on an open file (its `fstat`).
pub fn check_open(path: &Path, file: &File) -> Result<(), SpoolError> {
    let meta = file.metadata().map_err(SpoolError::Io)?;
    judge(
        path,
        Kind::File,
        false,
        meta.is_dir(),
        meta.uid(),
        meta.permissions().mode(),
    )
}

fn judge(
    path: &Path,
    kind: Kind,
    symlink: bool,
    is_dir: bool,
    uid: u32,
    mode: u32,
) -> Result<(), SpoolError> {
    match verdict(kind, symlink, is_dir, uid, euid(), mode) {
        None => Ok(()),
        Some(problem) => {
            let p = path.display();
            let fix = match problem {
                Problem::Symlink => {
                    format!("it is a symbolic link; remove it (rm {p}) and let postrelay create it")
                }
                Problem::WrongType => format!(
                    "it is not a {}; move it away",
                    if kind == Kind::Dir {
                        "directory"
                    } else {
                        "regular file"
                    }
                ),
                Problem::Owner(owner) => format!(
                    "it is owned by uid {owner}, not by uid {} that runs postrelay; chown {} {p}",
                    euid(),
                    euid()
                ),
                Problem::Writable => format!(
                    "it is writable by group or others; chmod {} {p}",
                    if kind == Kind::Dir { "700" } else { "600" }
                ),
            };
            Err(SpoolError::Untrusted {
                path: path.to_path_buf(),
                fix,
            })
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Problem {
    Symlink,
    WrongType,
    Owner(u32),
    Writable,
}

fn verdict(
    kind: Kind,
    symlink: bool,
    is_dir: bool,
    uid: u32,
    me: u32,
    mode: u32,
) -> Option<Problem> {
    if symlink {
        Some(Problem::Symlink)
    } else if is_dir != (kind == Kind::Dir) {
        Some(Problem::WrongType)
    } else if uid != me {
        Some(Problem::Owner(uid))
    } else if mode & 0o022 != 0 {
        Some(Problem::Writable)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_own_unshared_real_object_is_trusted() {
        use Kind::*;
        let cases = [
            (Dir, false, true, 0, 0o700, None),
            (Dir, false, true, 0, 0o755, None),
            (File, false, false, 0, 0o600, None),
            (Dir, true, false, 0, 0o777, Some(Problem::Symlink)),
            (Dir, false, false, 0, 0o700, Some(Problem::WrongType)),
            (File, false, true, 0, 0o700, Some(Problem::WrongType)),
            (Dir, false, true, 1000, 0o700, Some(Problem::Owner(1000))),
            (Dir, false, true, 0, 0o770, Some(Problem::Writable)),
            (Dir, false, true, 0, 0o702, Some(Problem::Writable)),
            (File, false, false, 0, 0o620, Some(Problem::Writable)),
        ];
        for (kind, symlink, is_dir, uid, mode, want) in cases {
            assert_eq!(
                verdict(kind, symlink, is_dir, uid, 0, mode),
                want,
                "{kind:?} symlink={symlink} dir={is_dir} uid={uid} mode={mode:o}"
            );
        }
    }

    #[test]
    fn a_refusal_names_the_path_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("queue");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
        let err = check(&shared, Kind::Dir).unwrap_err().to_string();
        assert!(err.contains(&shared.display().to_string()), "{err}");
        assert!(err.contains("chmod 700"), "{err}");
        let link = dir.path().join("tmp");
        std::os::unix::fs::symlink("/", &link).unwrap();
        let err = check(&link, Kind::Dir).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
    }
}
