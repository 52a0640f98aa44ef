//! A pidfile that a running daemon keeps locked.
//!
//! The lock, not the pid in the file, says whether a daemon runs: a pidfile left
//! behind by a dead process, or naming a pid that another program now has, is not
//! locked, so it never blocks a start; and of two daemons starting at once, only one
//! gets the lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long `acquire` retries a lock held for a moment by someone who only looks
/// (`status`, `running_pid`), and `running_pid` waits for a pid being written.
const PATIENCE: Duration = Duration::from_millis(300);
const RETRY_EVERY: Duration = Duration::from_millis(10);

/// A pidfile held by this process: exclusively locked, holding this process's pid.
///
/// Dropping it removes the file and releases the lock (the lock goes with the
/// process anyway, whatever way it ends).
#[derive(Debug)]
pub struct Pidfile {
    path: PathBuf,
    file: File,
}

impl Pidfile {
    /// Creates or opens the pidfile, locks it (exclusively, without waiting), and
    /// writes this process's pid into it.
    ///
    /// A pidfile that is a symbolic link is refused ([`Error::PidfileSymlink`]):
    /// the pid would be written into whatever file the link points at.
    ///
    /// Fails with [`Error::PidfileLocked`] (naming the holder's pid when it can be
    /// read) when a live daemon holds it.
    pub fn acquire(path: impl AsRef<Path>) -> Result<Pidfile> {
        let path = path.as_ref();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(path)
                .map_err(|source| open_error(path, source))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    if Instant::now() < deadline {
                        std::thread::sleep(RETRY_EVERY);
                        continue;
                    }
                    return Err(Error::PidfileLocked {
                        path: path.to_path_buf(),
                        pid: read_pid(&mut file).ok().flatten(),
                    });
                }
                Err(TryLockError::Error(source)) => {
                    return Err(Error::PidfileIo {
                        path: path.to_path_buf(),
                        source,
                    })
                }
            }
            // The daemon we raced with may have removed the file between our open and
            // our lock: then we hold a lock on a file nobody else will ever open.
            if !same_file(&file, path) {
                continue;
            }
            let io = |source| Error::PidfileIo {
                path: path.to_path_buf(),
                source,
            };
            file.set_len(0).map_err(io)?;
            file.seek(SeekFrom::Start(0)).map_err(io)?;
            writeln!(file, "{}", std::process::id()).map_err(io)?;
            file.sync_all().map_err(io)?;
            return Ok(Pidfile {
                path: path.to_path_buf(),
                file,
            });
        }
    }

    /// The pidfile's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        // Remove while still holding the lock, and only our own file, so that a
        // daemon starting meanwhile never ends up with the lock on a removed file.
        if same_file(&self.file, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The error of opening a pidfile; `O_NOFOLLOW` fails with `ELOOP` on a
/// symbolic link.
fn open_error(path: &Path, source: std::io::Error) -> Error {
    if source.raw_os_error() == Some(nix::libc::ELOOP) {
        return Error::PidfileSymlink {
            path: path.to_path_buf(),
        };
    }
    Error::PidfileOpen {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `path` names the very file `file` is (a symbolic link put there
/// since does not).
fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn read_pid(file: &mut File) -> std::io::Result<Option<u32>> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_string(&mut text)?;
    Ok(text.trim().parse().ok())
}

/// Whether a live daemon holds the pidfile, and its pid.
///
/// `Ok(None)` when the file does not exist or nobody holds its lock (whatever pid it
/// names); `Ok(Some(pid))` when it is locked. Fails when the file cannot be read (a
/// permission problem must not pass for "not running"), or when it is locked but
/// holds no pid ([`Error::PidfileContent`]).
pub fn running_pid(path: impl AsRef<Path>) -> Result<Option<u32>> {
    let path = path.as_ref();
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path);
    let mut file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(open_error(path, source)),
    };
    match file.try_lock_shared() {
        Ok(()) => return Ok(None),
        Err(TryLockError::WouldBlock) => {}
        Err(TryLockError::Error(source)) => {
            return Err(Error::PidfileIo {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    // Locked: a daemon runs. It writes its pid right after taking the lock.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let pid = read_pid(&mut file).map_err(|source| Error::PidfileIo {
            path: path.to_path_buf(),
            source,
        })?;
        match pid {
            Some(pid) => return Ok(Some(pid)),
            None if Instant::now() < deadline => std::thread::sleep(RETRY_EVERY),
            None => {
                return Err(Error::PidfileContent {
                    path: path.to_path_buf(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pgq-daemon-pidfile-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let made = std::fs::create_dir_all(&dir);
        assert!(made.is_ok(), "{made:?}");
        dir.join("test.pid")
    }

    #[test]
    fn a_held_pidfile_names_this_process_and_blocks_a_second_acquire() {
        let path = scratch("held");
        let held = Pidfile::acquire(&path);
        assert!(held.is_ok(), "{held:?}");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(text.trim(), std::process::id().to_string());
        assert_eq!(running_pid(&path).ok().flatten(), Some(std::process::id()));
        match Pidfile::acquire(&path) {
            Err(Error::PidfileLocked { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected PidfileLocked, got {other:?}"),
        }
        drop(held);
        assert!(!path.exists());
        assert_eq!(running_pid(&path).ok(), Some(None));
    }

    #[test]
    fn an_unlocked_pidfile_with_any_pid_does_not_block() {
        let path = scratch("stale");
        let written = std::fs::write(&path, "1\n");
        assert!(written.is_ok());
        assert_eq!(running_pid(&path).ok(), Some(None));
        let held = Pidfile::acquire(&path);
        assert!(held.is_ok(), "{held:?}");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(text, format!("{}\n", std::process::id()));
    }

    #[test]
    fn a_pidfile_that_is_a_symbolic_link_is_refused_and_its_target_left_alone() {
        let path = scratch("symlink");
        let target = path.with_file_name("precious");
        let written = std::fs::write(&target, "keep me\n");
        assert!(written.is_ok());
        let linked = std::os::unix::fs::symlink(&target, &path);
        assert!(linked.is_ok(), "{linked:?}");
        match Pidfile::acquire(&path) {
            Err(Error::PidfileSymlink { path: p }) => assert_eq!(p, path),
            other => panic!("expected PidfileSymlink, got {other:?}"),
        }
        assert!(matches!(running_pid(&path), Err(Error::PidfileSymlink { .. })));
        assert_eq!(std::fs::read_to_string(&target).unwrap_or_default(), "keep me\n");
    }

    #[test]
    fn errors_name_the_pidfile() {
        let path = PathBuf::from("/nonexistent-dir-for-pgq-daemon/x.pid");
        let message = Pidfile::acquire(&path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("/nonexistent-dir-for-pgq-daemon/x.pid"), "{message}");
    }
}
