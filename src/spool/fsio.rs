//! Durable, symlink-proof file operations: write to a fresh temp file
//! (created exclusively, mode 0600, never through a symlink), fsync, rename,
//! fsync the directory (the Maildir / Postfix protocol). Blocking: call from
//! `spawn_blocking`.
//!
//! Invariant: nothing here opens an existing path through a symlink, and
//! every file it creates is new (`O_EXCL`) with mode 0600 whatever the umask.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const NOFOLLOW: i32 = rustix::fs::OFlags::NOFOLLOW.bits() as i32;
const CLOEXEC: i32 = rustix::fs::OFlags::CLOEXEC.bits() as i32;

/// Flushes a directory's entries (new names, renames, unlinks) to disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    open_dir(dir)?.sync_all()
}

fn open_dir(dir: &Path) -> io::Result<File> {
    let directory = rustix::fs::OFlags::DIRECTORY.bits() as i32;
    OpenOptions::new()
        .read(true)
        .custom_flags(NOFOLLOW | CLOEXEC | directory)
        .open(dir)
}

/// Creates a new file (never an existing one, never through a symlink)
/// with mode 0600, open for writing and reading back.
pub fn create_new(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(NOFOLLOW | CLOEXEC)
        .open(path)?;
    // The umask can only have narrowed it; set it exactly.
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

/// Opens an existing file for reading; a symlink is an error (`ELOOP`).
pub fn open_read(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(NOFOLLOW | CLOEXEC)
        .open(path)
}

/// Opens an existing file for writing (no truncation); a symlink is an error.
pub fn open_write(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(NOFOLLOW | CLOEXEC)
        .open(path)
}

/// Reads a whole file without following a symlink.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    open_read(path)?.read_to_end(&mut out)?;
    Ok(out)
}

/// Creates directory `dir` with mode 0700 (whatever the umask) unless it exists.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(0o700)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// A temp name nobody can predict: `<stem>.<random>.tmp` in `dir`.
pub fn temp_name(dir: &Path, stem: &str) -> PathBuf {
    dir.join(format!("{stem}.{:016x}.tmp", rand::random::<u64>()))
}

/// Writes `bytes` to `path` so that after return the file is on disk whole or
/// not at all: a fresh temp file beside it, fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    write_atomic_via(dir, path, bytes)
}

/// As [`write_atomic`], with the temp file in `tmp_dir` (same filesystem as `path`).
pub fn write_atomic_via(tmp_dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_renamed_via(tmp_dir, path, bytes)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// [`write_atomic_via`] without the directory sync: the file is whole on
/// disk under its temp name and renamed to `path`; the rename is durable
/// once the caller has synced `path`'s directory (a group sync can cover
/// many renames).
pub fn write_renamed_via(tmp_dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = temp_name(tmp_dir, &format!(".{name}"));
    let result = (|| {
        let mut f = create_new(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A fresh `io::Error` like `e`, for each of many operations one failure
/// answers (the OS code kept, so a full disk stays one).
pub fn copy_error(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

/// Removes `path` (a symlink itself, never its target); absent is fine.
pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Whether a regular file (not a symlink) exists at `path`.
pub fn is_file(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file())
}

/// Free bytes available to unprivileged users on the filesystem holding `dir`.
pub fn free_space(dir: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(dir).map_err(io::Error::from)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// True when the error means the disk (or quota) is full.
pub fn is_disk_full(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(code) if code == rustix::io::Errno::NOSPC.raw_os_error() || code == rustix::io::Errno::DQUOT.raw_os_error())
        || err.kind() == io::ErrorKind::StorageFull
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn created_files_are_0600_and_never_replace_or_follow_an_existing_path() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        let link = dir.path().join("link");
        symlink(&victim, &link).unwrap();
        assert!(create_new(&link).is_err());
        assert!(create_new(&victim).is_err());
        assert!(open_read(&link).is_err());
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        let fresh = dir.path().join("fresh");
        create_new(&fresh).unwrap();
        let mode = fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn write_atomic_leaves_no_temp_file_and_replaces_a_symlink_not_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        let path = dir.path().join("entry.json");
        symlink(&victim, &path).unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(read(&path).unwrap(), b"new");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
