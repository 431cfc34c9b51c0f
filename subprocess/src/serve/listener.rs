//! Where a served plugin listens: a Unix socket named `plugin<digits>` in
//! `PLUGIN_UNIX_SOCKET_DIR` (or the temp dir), handed to `PLUGIN_UNIX_SOCKET_GROUP` with mode
//! 0660 when that is set, or TCP on 127.0.0.1 inside `PLUGIN_MIN_PORT..=PLUGIN_MAX_PORT`.
//!
//! The socket file belongs to its [`Listener`] and is removed when that is dropped. Accepted
//! connections are TLS-wrapped here (when TLS is on) and handed to tonic as a stream; this
//! module knows nothing about gRPC services.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};

use crate::error::{Error, Result};
use crate::handshake::{Address, MAX_UNIX_PATH, env};
use crate::transport::{BoxIo, Incoming};

/// How long an accepted connection has to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A directory (and optional group) Unix sockets are created in; the main listener and every
/// broker listener of a served plugin use the same one, as a Go plugin does.
#[derive(Debug, Clone)]
pub(crate) struct UnixPlace {
    dir: PathBuf,
    group: Option<libc::gid_t>,
}

impl UnixPlace {
    /// The place the environment asks for: `PLUGIN_UNIX_SOCKET_DIR` or the temp dir, and
    /// `PLUGIN_UNIX_SOCKET_GROUP` (a group name or numeric gid).
    pub(crate) fn from_env() -> Result<UnixPlace> {
        let dir = match std::env::var_os(env::UNIX_SOCKET_DIR) {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => std::env::temp_dir(),
        };
        let group = match std::env::var(env::UNIX_SOCKET_GROUP) {
            Ok(group) if !group.is_empty() => Some(resolve_group(&group)?),
            _ => None,
        };
        Ok(UnixPlace { dir, group })
    }

    /// A place in `dir` with no group change (the test harness's temp dir).
    pub(crate) fn in_dir(dir: &Path) -> UnixPlace {
        UnixPlace {
            dir: dir.to_owned(),
            group: None,
        }
    }

    /// Binds a fresh socket `plugin<digits>` in the directory.
    pub(crate) fn bind(&self) -> Result<(UnixListener, PathBuf)> {
        let mut last_error = None;
        for attempt in 0..64u32 {
            let path = self.dir.join(format!("plugin{}", random_digits(attempt)));
            let length = path.as_os_str().as_bytes().len();
            if length > MAX_UNIX_PATH {
                return Err(Error::SocketPath {
                    path,
                    length,
                    limit: MAX_UNIX_PATH,
                });
            }
            match UnixListener::bind(&path) {
                Ok(listener) => {
                    self.share(&path)?;
                    return Ok((listener, path));
                }
                Err(error) if error.kind() == io::ErrorKind::AddrInUse => last_error = Some(error),
                Err(source) => {
                    return Err(Error::Listen {
                        address: path.display().to_string(),
                        source,
                    });
                }
            }
        }
        Err(Error::Listen {
            address: self.dir.display().to_string(),
            source: last_error.unwrap_or_else(|| io::Error::other("no free socket name")),
        })
    }

    /// Gives the socket to the configured group with mode 0660.
    fn share(&self, path: &Path) -> Result<()> {
        let Some(gid) = self.group else {
            return Ok(());
        };
        let failed = |source: io::Error| {
            let _ = std::fs::remove_file(path);
            Error::Listen {
                address: path.display().to_string(),
                source: io::Error::new(
                    source.kind(),
                    format!("cannot give the socket to group {gid}: {source}"),
                ),
            }
        };
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(failed)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(failed)
    }
}

/// A group name or numeric gid, as `PLUGIN_UNIX_SOCKET_GROUP` holds it.
fn resolve_group(group: &str) -> Result<libc::gid_t> {
    if let Ok(gid) = group.parse::<libc::gid_t>() {
        return Ok(gid);
    }
    let unknown = || Error::Serve {
        reason: format!(
            "{} names an unknown group {group:?}",
            env::UNIX_SOCKET_GROUP
        ),
    };
    let name = std::ffi::CString::new(group).map_err(|_| unknown())?;
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: a zeroed `group` is a valid out-parameter; getgrnam_r writes into it and the
    // buffer, whose real length we pass, and sets `found` to it or to null.
    let mut entry: libc::group = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::group = std::ptr::null_mut();
    let status = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut entry,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        )
    };
    if status != 0 || found.is_null() {
        return Err(unknown());
    }
    Ok(entry.gr_gid)
}

/// Up to ten decimal digits, different per call and per process (as Go's temp names).
fn random_digits(attempt: u32) -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(attempt);
    hasher.write_u32(std::process::id());
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    (hasher.finish() % 4_294_967_295) as u32
}

/// A bound listener. Dropping it removes its socket file.
#[derive(Debug)]
pub(crate) enum Listener {
    /// A Unix socket and its path.
    Unix(UnixListener, SocketFile),
    /// A TCP socket on 127.0.0.1.
    Tcp(TcpListener),
}

/// A socket file removed on drop.
#[derive(Debug)]
pub(crate) struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Listener {
    /// Binds a Unix socket at `place`.
    pub(crate) fn unix(place: &UnixPlace) -> Result<Listener> {
        let (listener, path) = place.bind()?;
        Ok(Listener::Unix(listener, SocketFile(path)))
    }

    /// Binds 127.0.0.1 on the first free port of `PLUGIN_MIN_PORT..=PLUGIN_MAX_PORT` (an
    /// OS-chosen port when both are unset or 0).
    pub(crate) async fn tcp_from_env() -> Result<Listener> {
        let port = |key: &str| -> Result<u16> {
            match std::env::var(key) {
                Ok(text) if !text.is_empty() => text.parse().map_err(|error| Error::Serve {
                    reason: format!("couldn't get value from {key}: {error}"),
                }),
                _ => Ok(0),
            }
        };
        let (min, max) = (port(env::MIN_PORT)?, port(env::MAX_PORT)?);
        if min > max {
            return Err(Error::Serve {
                reason: format!(
                    "{} value of {min} is greater than {} value of {max}",
                    env::MIN_PORT,
                    env::MAX_PORT
                ),
            });
        }
        let mut last_error = None;
        for port in min..=max {
            match TcpListener::bind(("127.0.0.1", port)).await {
                Ok(listener) => return Ok(Listener::Tcp(listener)),
                Err(error) => last_error = Some(error),
            }
        }
        Err(Error::Listen {
            address: format!("127.0.0.1:{min}..={max}"),
            source: last_error.unwrap_or_else(|| io::Error::other("no port in range")),
        })
    }

    /// The address for the handshake line.
    pub(crate) fn address(&self) -> Result<Address> {
        match self {
            Listener::Unix(_, file) => Ok(Address::Unix(file.0.clone())),
            Listener::Tcp(listener) => {
                listener
                    .local_addr()
                    .map(Address::Tcp)
                    .map_err(|source| Error::Listen {
                        address: "127.0.0.1".to_owned(),
                        source,
                    })
            }
        }
    }

    async fn accept(&self) -> io::Result<BoxIo> {
        match self {
            Listener::Unix(listener, _) => Ok(Box::new(listener.accept().await?.0)),
            Listener::Tcp(listener) => {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                Ok(Box::new(stream))
            }
        }
    }
}

/// The connections `listener` accepts, TLS-wrapped when `tls` is given, as a stream tonic can
/// serve. A failed TLS handshake is logged and skipped. The listener (and its socket file)
/// lives as long as the stream.
pub(crate) fn incoming(
    listener: Listener,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> impl futures::Stream<Item = io::Result<Incoming>> + Send + 'static {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    futures::stream::unfold((listener, acceptor), |(listener, acceptor)| async move {
        loop {
            let io = match listener.accept().await {
                Ok(io) => io,
                Err(error) => return Some((Err(error), (listener, acceptor))),
            };
            let io: BoxIo = match &acceptor {
                None => io,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                        Ok(Ok(tls)) => Box::new(tls),
                        Ok(Err(error)) => {
                            tracing::warn!(%error, "refused a connection: TLS handshake failed");
                            continue;
                        }
                        Err(_) => {
                            tracing::warn!("refused a connection: TLS handshake timed out");
                            continue;
                        }
                    }
                }
            };
            return Some((Ok(Incoming(io)), (listener, acceptor)));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sockets_are_named_like_go_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let listener = Listener::unix(&UnixPlace::in_dir(dir.path())).unwrap();
        let Address::Unix(path) = listener.address().unwrap() else {
            panic!("not a unix address");
        };
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(
            name.strip_prefix("plugin").unwrap().parse::<u32>().is_ok(),
            "{name}"
        );
        assert!(path.exists());
        drop(listener);
        assert!(!path.exists());
    }

    #[test]
    fn too_long_socket_paths_are_a_typed_error() {
        let place = UnixPlace::in_dir(&PathBuf::from(format!("/tmp/{}", "d".repeat(120))));
        let error = place.bind().unwrap_err();
        assert!(
            matches!(error, Error::SocketPath { limit, .. } if limit == MAX_UNIX_PATH),
            "{error}"
        );
    }
}
