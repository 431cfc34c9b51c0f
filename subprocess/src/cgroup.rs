//! A plugin's own cgroup (v2), where the host may create one: the plugin enters it before it
//! execs, everything it starts stays in it — a daemon that left the plugin's process group with
//! `setsid` included — and `cgroup.kill` ends them all at once.
//!
//! Whether the host may is found out at run time, once per process: a cgroup v2 hierarchy is
//! mounted (unified or hybrid), the host's own cgroup in it is writable, and a cgroup created
//! there has `cgroup.kill` (Linux 5.14). Otherwise plugins run without one (said once, at debug
//! level) and only their process group is ended (see [`crate::child`]).
//!
//! The layout is `<the host's cgroup>/plinth-<pid namespace>-<pid>-<start time>/plugin-<n>`: one
//! directory per host process, removed with its last plugin, and one per plugin, removed once
//! its processes are gone (by a background thread when they take a moment to exit). A host
//! killed with `SIGKILL` can neither remove its directory nor end what its plugins started; the
//! next host in the same cgroup and pid namespace does, when it starts its first plugin.
//!
//! What does not live here: starting the child (it writes itself into `cgroup.procs` between
//! `clone` and `exec`, [`crate::child`]) and the process group.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

/// How long a killed cgroup's removal is retried before it is left behind with a warning.
const REMOVE_FOR: Duration = Duration::from_secs(30);
/// How often the background remover retries.
const REMOVE_EVERY: Duration = Duration::from_millis(20);

/// One plugin's cgroup. Dropping it kills what is left in it and removes it.
#[derive(Debug)]
pub(crate) struct Cgroup {
    dir: PathBuf,
}

/// What the process knows about its cgroups.
struct State {
    /// Whether the hierarchy was looked for.
    checked: bool,
    /// The host's own cgroup, when plugins can have cgroups under it.
    base: Option<PathBuf>,
    /// This host's directory under it, while it holds plugin cgroups.
    host: Option<PathBuf>,
    /// How many plugin cgroups exist under `host`.
    plugins: usize,
    /// The number of the next plugin cgroup.
    next: u64,
}

static STATE: Mutex<State> = Mutex::new(State {
    checked: false,
    base: None,
    host: None,
    plugins: 0,
    next: 0,
});

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Cgroup {
    /// A new, empty cgroup for one plugin, or `None` when the host cannot have one. Blocks
    /// briefly on the cgroup file system (and, the first time, on the sweep of cgroups a killed
    /// host left): call it where blocking is allowed.
    pub(crate) fn create() -> Option<Cgroup> {
        let mut state = state();
        if !state.checked {
            state.checked = true;
            match find_base() {
                Ok(base) => {
                    sweep(&base);
                    state.base = Some(base);
                }
                Err(reason) => {
                    tracing::debug!(%reason, "plugins run without a cgroup of their own");
                }
            }
        }
        let base = state.base.clone()?;
        let host = match state.host.clone() {
            Some(host) => host,
            None => match create_host_dir(&base) {
                Ok(host) => {
                    state.host = Some(host.clone());
                    host
                }
                Err(reason) => {
                    tracing::debug!(cgroup = %base.display(), %reason,
                        "plugins run without a cgroup of their own");
                    state.base = None;
                    return None;
                }
            },
        };
        let dir = host.join(format!("plugin-{}", state.next));
        state.next += 1;
        if let Err(error) = fs::create_dir(&dir) {
            tracing::debug!(cgroup = %dir.display(), %error, "cannot create the plugin's cgroup");
            if state.plugins == 0 {
                let _ = fs::remove_dir(&host);
                state.host = None;
            }
            return None;
        }
        state.plugins += 1;
        Some(Cgroup { dir })
    }

    /// The cgroup's directory.
    #[cfg(test)]
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// `cgroup.procs`, open for writing (close-on-exec): a process writing `0` to it moves
    /// itself in.
    pub(crate) fn procs(&self) -> io::Result<OwnedFd> {
        let file = fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.procs"))?;
        Ok(file.into())
    }

    /// Sends `SIGKILL` to every process in the cgroup, and to those it is forking.
    pub(crate) fn kill(&self) {
        kill(&self.dir);
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.kill();
        let dir = std::mem::take(&mut self.dir);
        if !remove_plugin_dir(&dir) {
            remove_later(Removal::Plugin(dir));
        }
    }
}

fn kill(dir: &Path) {
    if let Err(error) = fs::write(dir.join("cgroup.kill"), "1") {
        tracing::debug!(cgroup = %dir.display(), %error, "cannot kill the cgroup");
    }
}

/// The host's own cgroup in the v2 hierarchy, or why there is none to use.
fn find_base() -> Result<PathBuf, String> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|error| format!("cannot read /proc/self/mountinfo: {error}"))?;
    let (root, mount) = cgroup2_mount(&mountinfo).ok_or("no cgroup v2 hierarchy is mounted")?;
    let cgroups = fs::read_to_string("/proc/self/cgroup")
        .map_err(|error| format!("cannot read /proc/self/cgroup: {error}"))?;
    let own = cgroups
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or("this process is in no cgroup v2")?;
    let relative = Path::new(own)
        .strip_prefix(&root)
        .map_err(|_| format!("this process's cgroup {own} is outside the mounted {root}"))?;
    let base = Path::new(&mount).join(relative);
    if !base.is_dir() {
        return Err(format!("{} is not a directory", base.display()));
    }
    Ok(base)
}

/// The root and mount point of the first cgroup2 mount in `mountinfo`.
fn cgroup2_mount(mountinfo: &str) -> Option<(String, String)> {
    mountinfo.lines().find_map(|line| {
        let (mount, filesystem) = line.split_once(" - ")?;
        if filesystem.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mut fields = mount.split_whitespace().skip(3);
        let root = unescape(fields.next()?);
        let point = unescape(fields.next()?);
        Some((root, point))
    })
}

/// A mountinfo path with its octal escapes (`\040` for a space) decoded.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let octal = bytes.get(index + 1..index + 4).filter(|digits| {
            bytes[index] == b'\\' && digits.iter().all(|digit| (b'0'..=b'7').contains(digit))
        });
        match octal {
            Some(digits) => {
                let value = digits
                    .iter()
                    .fold(0u32, |value, digit| value * 8 + u32::from(digit - b'0'));
                out.push(value as u8);
                index += 4;
            }
            None => {
                out.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What names a host process across pid reuse: its pid namespace, pid and start time.
#[derive(Debug, PartialEq, Eq)]
struct Owner {
    namespace: u64,
    pid: u32,
    start: u64,
}

impl Owner {
    fn current() -> io::Result<Owner> {
        let pid = std::process::id();
        let start = start_time(pid).ok_or_else(|| io::Error::other("no start time in /proc"))?;
        Ok(Owner {
            namespace: fs::metadata("/proc/self/ns/pid")?.ino(),
            pid,
            start,
        })
    }

    fn dir_name(&self) -> String {
        format!("plinth-{}-{}-{}", self.namespace, self.pid, self.start)
    }

    fn parse(name: &str) -> Option<Owner> {
        let mut parts = name.strip_prefix("plinth-")?.splitn(3, '-');
        Some(Owner {
            namespace: parts.next()?.parse().ok()?,
            pid: parts.next()?.parse().ok()?,
            start: parts.next()?.parse().ok()?,
        })
    }

    /// Whether the process is still running (a zombie has ended).
    fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

/// The start time of `pid` (in clock ticks since boot), unless it has ended.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (in parentheses, which may contain anything): the state
    // is field 3, the start time field 22.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    if fields.next()? == "Z" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// This host's directory under `base`, with `cgroup.kill` in it.
fn create_host_dir(base: &Path) -> Result<PathBuf, String> {
    let owner = Owner::current().map_err(|error| format!("cannot name this process: {error}"))?;
    let host = base.join(owner.dir_name());
    match fs::create_dir(&host) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(format!("cannot create {}: {error}", host.display())),
    }
    if !host.join("cgroup.kill").exists() {
        let _ = fs::remove_dir(&host);
        return Err("the kernel has no cgroup.kill (Linux 5.14 and later)".to_owned());
    }
    Ok(host)
}

/// Kills and removes what hosts of this pid namespace that no longer run left under `base`.
fn sweep(base: &Path) {
    let Ok(namespace) = fs::metadata("/proc/self/ns/pid").map(|meta| meta.ino()) else {
        return;
    };
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name.to_str().and_then(Owner::parse) else {
            continue;
        };
        if owner.namespace != namespace || owner.alive() {
            continue;
        }
        let host = entry.path();
        let plugins: Vec<PathBuf> = fs::read_dir(&host)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
            .map(|entry| entry.path())
            .collect();
        tracing::debug!(cgroup = %host.display(), plugins = plugins.len(),
            "ending what a host that is gone left running");
        for plugin in plugins {
            kill(&plugin);
            remove_later(Removal::Stale(plugin));
        }
        remove_later(Removal::Stale(host));
    }
}

/// A directory the remover thread removes once it is empty.
#[derive(Debug)]
enum Removal {
    /// One of this host's plugin cgroups (counted in [`State`]).
    Plugin(PathBuf),
    /// A cgroup a host that is gone left.
    Stale(PathBuf),
}

impl Removal {
    /// Tries once; whether the directory is gone (or will never go).
    fn try_remove(&self) -> bool {
        match self {
            Removal::Plugin(dir) => remove_plugin_dir(dir),
            Removal::Stale(dir) => !busy(fs::remove_dir(dir), dir),
        }
    }

    fn dir(&self) -> &Path {
        match self {
            Removal::Plugin(dir) | Removal::Stale(dir) => dir,
        }
    }
}

/// Whether removing `dir` failed only because processes are still leaving it; other failures
/// are logged and given up on.
fn busy(removed: io::Result<()>, dir: &Path) -> bool {
    match removed {
        Ok(()) => false,
        Err(error) if error.kind() == io::ErrorKind::NotFound => false,
        Err(error) if error.raw_os_error() == Some(libc::EBUSY) => true,
        Err(error) => {
            tracing::warn!(cgroup = %dir.display(), %error, "cannot remove a plugin's cgroup");
            false
        }
    }
}

/// Removes a plugin cgroup of this host, and the host's directory with its last one; whether
/// that is done (false while processes are still leaving it).
fn remove_plugin_dir(dir: &Path) -> bool {
    let mut state = state();
    if busy(fs::remove_dir(dir), dir) {
        return false;
    }
    state.plugins = state.plugins.saturating_sub(1);
    if state.plugins == 0
        && let Some(host) = state.host.take()
        && busy(fs::remove_dir(&host), &host)
    {
        // A plugin cgroup the count missed: keep using the directory.
        state.host = Some(host);
    }
    true
}

/// Hands `removal` to the remover thread, starting it when it is not running.
fn remove_later(removal: Removal) {
    static REMOVER: Mutex<Option<mpsc::Sender<Removal>>> = Mutex::new(None);
    let mut remover = REMOVER.lock().unwrap_or_else(PoisonError::into_inner);
    let removal = match remover.as_ref() {
        Some(queue) => match queue.send(removal) {
            Ok(()) => return,
            Err(mpsc::SendError(removal)) => removal,
        },
        None => removal,
    };
    let (queue, removals) = mpsc::channel();
    let started = std::thread::Builder::new()
        .name("plinth-cgroups".to_owned())
        .spawn(move || remove(removals));
    if let Err(error) = started {
        tracing::warn!(cgroup = %removal.dir().display(), %error,
            "no thread to remove a plugin's cgroup; it stays");
        return;
    }
    if queue.send(removal).is_ok() {
        *remover = Some(queue);
    }
}

/// The remover thread: retries each removal until it is done or [`REMOVE_FOR`] has passed.
fn remove(removals: mpsc::Receiver<Removal>) {
    let mut pending: Vec<(Removal, Instant)> = Vec::new();
    loop {
        if pending.is_empty() {
            match removals.recv() {
                Ok(removal) => pending.push((removal, Instant::now())),
                Err(_) => return,
            }
        }
        pending.extend(removals.try_iter().map(|removal| (removal, Instant::now())));
        pending.retain(|(removal, since)| {
            if removal.try_remove() {
                return false;
            }
            if since.elapsed() > REMOVE_FOR {
                tracing::warn!(cgroup = %removal.dir().display(),
                    "a plugin's cgroup still has processes; it stays");
                return false;
            }
            true
        });
        if !pending.is_empty() {
            std::thread::sleep(REMOVE_EVERY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup2_mount_is_found_in_mountinfo() {
        let mountinfo = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 /inner /sys/fs/cgroup/uni\\040fied rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(
            cgroup2_mount(mountinfo),
            Some(("/inner".to_owned(), "/sys/fs/cgroup/uni fied".to_owned()))
        );
        assert_eq!(cgroup2_mount("32 31 0:29 / /x rw - cgroup cgroup rw"), None);
    }

    #[test]
    fn an_owner_round_trips_through_its_directory_name_and_is_alive_while_it_runs() {
        let owner = Owner::current().expect("this process has an owner name");
        assert_eq!(Owner::parse(&owner.dir_name()).as_ref(), Some(&owner));
        assert!(owner.alive());
        let restarted = Owner {
            start: owner.start + 1,
            ..owner
        };
        assert!(!restarted.alive(), "another start time is another process");
        assert_eq!(Owner::parse("plinth-1-2"), None);
        assert_eq!(Owner::parse("other-1-2-3"), None);
    }

    /// Starts `sleep 300` and moves it into the cgroup at `dir`.
    fn sleeper_in(dir: &Path) -> std::process::Child {
        let sleeper = std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .expect("sleep starts");
        fs::write(dir.join("cgroup.procs"), sleeper.id().to_string()).expect("moved in");
        sleeper
    }

    fn killed(mut child: std::process::Child) -> bool {
        use std::os::unix::process::ExitStatusExt;
        child.wait().expect("wait").signal() == Some(libc::SIGKILL)
    }

    /// Waits (boundedly) for `dir` to be removed.
    fn assert_removed(dir: &Path) {
        for _ in 0..400 {
            if !dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("{} was not removed", dir.display());
    }

    #[test]
    fn kill_ends_every_member_and_a_dropped_cgroup_is_removed() {
        let Some(cgroup) = Cgroup::create() else {
            eprintln!("no cgroup v2 this host may write; not tested");
            return;
        };
        let dir = cgroup.dir().to_owned();
        let members = [sleeper_in(&dir), sleeper_in(&dir)];
        cgroup.kill();
        for member in members {
            assert!(killed(member));
        }
        let member = sleeper_in(&dir);
        drop(cgroup);
        assert!(killed(member), "dropping kills what is left");
        assert_removed(&dir);
    }

    #[test]
    fn what_a_host_that_is_gone_left_is_killed_and_removed() {
        let Some(_ours) = Cgroup::create() else {
            eprintln!("no cgroup v2 this host may write; not tested");
            return;
        };
        let base = find_base().expect("a base, since a cgroup was created");
        let us = Owner::current().expect("owner");
        let gone = Owner {
            start: us.start + 1,
            ..us
        };
        let host = base.join(gone.dir_name());
        let plugin = host.join("plugin-0");
        fs::create_dir_all(&plugin).expect("a stale cgroup");
        let left = sleeper_in(&plugin);
        sweep(&base);
        assert!(killed(left));
        assert_removed(&host);
    }
}
