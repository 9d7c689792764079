//! The submitting side: `sendmail` writes a drop file under a temp name no
//! one can predict, then [`DropFile::commit`] makes it durable and visible.
//!
//! Invariant: a drop file exists under its final name only once its bytes
//! are fsynced, and the rename that published it is on disk before `commit`
//! returns (the directory is fsynced, or when the submitting user may not
//! open it, the whole filesystem is synced with `syncfs`). The file is
//! created `O_EXCL|O_NOFOLLOW` with mode 0640: readable by its owner and
//! by the maildrop's group (the daemon's, inherited from the setgid
//! directory), by no one else.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of a drop file: the owner and the daemon's group may read it.
pub const FILE_MODE: u32 = 0o640;

/// A drop file being written; removed on drop unless committed.
pub struct DropFile {
    dir: PathBuf,
    stem: String,
    tmp: Option<PathBuf>,
    file: File,
}

impl DropFile {
    /// Creates `.<stem>.tmp` in `dir`: `stem` is a ULID (import order) and 64
    /// random bits, so no other user can guess or pre-empt the name.
    pub fn create(dir: &Path) -> io::Result<DropFile> {
        let stem = format!("{}-{:016x}", ulid::Ulid::generate(), rand::random::<u64>());
        let tmp = dir.join(format!(".{stem}.tmp"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(nofollow_cloexec())
            .open(&tmp)?;
        let made = DropFile {
            dir: dir.to_path_buf(),
            stem,
            tmp: Some(tmp),
            file,
        };
        // The umask can only have narrowed it; set it exactly.
        made.file
            .set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
        Ok(made)
    }

    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// fsync, rename to the final name (never over an existing file), make
    /// the rename durable. Returns the final path.
    pub fn commit(mut self) -> io::Result<PathBuf> {
        self.file.sync_all()?;
        let tmp = self.tmp.take().expect("uncommitted drop file");
        let done = self.dir.join(&self.stem);
        let renamed = rustix::fs::renameat_with(
            rustix::fs::CWD,
            &tmp,
            rustix::fs::CWD,
            &done,
            rustix::fs::RenameFlags::NOREPLACE,
        );
        if let Err(e) = renamed {
            let _ = fs::remove_file(&tmp);
            return Err(e.into());
        }
        // The directory is not readable by other users (no listing), so they
        // cannot open it to fsync it; syncfs flushes the rename with the rest.
        match crate::spool::fsio::sync_dir(&self.dir) {
            Ok(()) => Ok(done),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                rustix::fs::syncfs(&self.file)?;
                Ok(done)
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for DropFile {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = fs::remove_file(tmp);
        }
    }
}

fn nofollow_cloexec() -> i32 {
    (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC).bits() as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_drop_file_appears_under_its_final_name_only_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = DropFile::create(dir.path()).unwrap();
        f.file().write_all(b"bytes").unwrap();
        let pending = names(dir.path());
        assert_eq!(pending.len(), 1);
        assert!(pending[0].starts_with('.') && pending[0].ends_with(".tmp"));
        let done = f.commit().unwrap();
        assert_eq!(
            names(dir.path()),
            vec![done.file_name().unwrap().to_string_lossy()]
        );
        let meta = fs::metadata(&done).unwrap();
        assert_eq!(meta.mode() & 0o7777, FILE_MODE);
        assert_eq!(fs::read(&done).unwrap(), b"bytes");
    }

    #[test]
    fn an_uncommitted_drop_file_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        drop(DropFile::create(dir.path()).unwrap());
        assert!(names(dir.path()).is_empty());
    }
}
