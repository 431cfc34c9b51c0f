//! What a guest may touch: the WASI context, deny-by-default, and the grants that open it up.
//!
//! Without grants a guest has no files, no environment, no stdin and no network; clocks and
//! random numbers are always available. [`Grants`] adds directories (read-only or read-write),
//! environment variables and the host's stdin (go-plugin's TTY preservation counterpart). The
//! network stays closed: there is no grant for it.
//!
//! A read-write grant lets the guest create symbolic links, but only to relative targets
//! without `..`: WASI's own resolution keeps the guest inside the grant
//! whatever a link says, but host programs reading the directory afterwards follow links the
//! ordinary way, so a link the guest leaves behind must not point outside it.

use std::path::{Path, PathBuf};

use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use crate::error::{Error, Result};
use crate::output::GuestOutput;

/// How a granted directory may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Files and directories can be read and listed, never changed.
    ReadOnly,
    /// Files and directories can be read, created, written and removed.
    ReadWrite,
}

/// One directory of the host made visible to the guest.
#[derive(Debug, Clone)]
pub struct DirGrant {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where the guest sees it (for example `/data`).
    pub guest: String,
    /// What the guest may do there.
    pub access: Access,
}

/// The sandbox grants of one plugin. The default grants nothing.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    dirs: Vec<DirGrant>,
    env: Vec<(String, String)>,
    inherit_stdin: bool,
}

impl Grants {
    /// No grants at all.
    pub fn none() -> Grants {
        Grants::default()
    }

    /// Makes the host directory `host` visible to the guest at `guest`.
    pub fn dir(
        mut self,
        host: impl Into<PathBuf>,
        guest: impl Into<String>,
        access: Access,
    ) -> Grants {
        self.dirs.push(DirGrant {
            host: host.into(),
            guest: guest.into(),
            access,
        });
        self
    }

    /// Sets the environment variable `key` to `value` in the guest.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Grants {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Passes the host's own value of `key` to the guest, if the host has one.
    pub fn env_from_host(self, key: &str) -> Grants {
        match std::env::var(key) {
            Ok(value) => self.env(key, value),
            Err(_) => self,
        }
    }

    /// Lets the guest read the host's stdin.
    pub fn inherit_stdin(mut self) -> Grants {
        self.inherit_stdin = true;
        self
    }

    /// The directory grants.
    pub fn dirs(&self) -> &[DirGrant] {
        &self.dirs
    }

    /// Checks, before any instance exists, that every granted directory is one.
    pub(crate) fn validate(&self) -> Result<()> {
        for grant in &self.dirs {
            let meta = std::fs::metadata(&grant.host).map_err(|e| Error::Grant {
                path: grant.host.clone(),
                reason: e.to_string(),
            })?;
            if !meta.is_dir() {
                return Err(grant_error(&grant.host, "it is not a directory"));
            }
            if !grant.guest.starts_with('/') {
                return Err(grant_error(
                    &grant.host,
                    &format!("the guest path {:?} must be absolute", grant.guest),
                ));
            }
        }
        Ok(())
    }

    /// Builds a fresh WASI context for one instance.
    pub(crate) fn build(&self, stdout: GuestOutput, stderr: GuestOutput) -> Result<WasiCtx> {
        let mut builder = WasiCtxBuilder::new();
        builder.stdout(stdout).stderr(stderr);
        if self.inherit_stdin {
            builder.inherit_stdin();
        }
        for (key, value) in &self.env {
            builder.env(key, value);
        }
        for grant in &self.dirs {
            let perms = match grant.access {
                Access::ReadOnly => FsPerms::ReadOnly,
                Access::ReadWrite => FsPerms::ReadWrite,
            };
            builder
                .preopened_dir(&grant.host, &grant.guest, perms)
                .map_err(|e| grant_error(&grant.host, &e.to_string()))?;
        }
        Ok(builder.build())
    }
}

fn grant_error(path: &Path, reason: &str) -> Error {
    Error::Grant {
        path: path.to_owned(),
        reason: reason.to_owned(),
    }
}
