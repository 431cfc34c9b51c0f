//! Redirecting a served plugin's own stdout and stderr (fd 1 and fd 2) into pipes after the
//! handshake, so that what the program prints travels over `/plugin.GRPCStdio/StreamStdio`
//! instead of the host's handshake pipe (which a Go host discards) and log pipe.
//!
//! The originals are kept: the hclog layer writes to a duplicate of the original stderr, and
//! dropping [`Redirect`] puts both back, which also closes the pipes' write ends so their
//! readers see the end.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::net::unix::pipe;

/// fd 1 and fd 2 pointing into pipes; dropping it restores them.
#[derive(Debug)]
pub(crate) struct Redirect {
    stdout: OwnedFd,
    stderr: OwnedFd,
}

/// The read ends of the redirected stdout and stderr.
pub(crate) struct Readers {
    /// What the program writes to fd 1.
    pub(crate) stdout: pipe::Receiver,
    /// What the program writes to fd 2.
    pub(crate) stderr: pipe::Receiver,
}

impl Redirect {
    /// Points fd 1 and fd 2 into new pipes. Must run inside a tokio runtime.
    pub(crate) fn start() -> io::Result<(Redirect, Readers)> {
        let _ = io::stdout().flush();
        let (stdout_read, stdout_write) = pipe_pair()?;
        let (stderr_read, stderr_write) = pipe_pair()?;
        let readers = Readers {
            stdout: pipe::Receiver::from_owned_fd(stdout_read)?,
            stderr: pipe::Receiver::from_owned_fd(stderr_read)?,
        };
        let saved_stdout = duplicate(1)?;
        let saved_stderr = duplicate(2)?;
        replace(1, &stdout_write)?;
        if let Err(error) = replace(2, &stderr_write) {
            let _ = replace(1, &saved_stdout);
            return Err(error);
        }
        Ok((
            Redirect {
                stdout: saved_stdout,
                stderr: saved_stderr,
            },
            readers,
        ))
    }
}

impl Drop for Redirect {
    fn drop(&mut self) {
        let _ = io::stdout().flush();
        let _ = replace(1, &self.stdout);
        let _ = replace(2, &self.stderr);
    }
}

fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two new descriptors into the array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn duplicate(fd: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor or -1.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

fn replace(target: libc::c_int, with: &OwnedFd) -> io::Result<()> {
    // SAFETY: dup2 atomically points `target` at the open file `with` refers to.
    if unsafe { libc::dup2(with.as_raw_fd(), target) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
