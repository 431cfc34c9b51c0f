//! Starting a plugin's process, and the handle that signals and reaps it.
//!
//! On Linux a plugin must get `SIGTERM` when the host dies without cleaning up
//! (`PR_SET_PDEATHSIG`), which only the child itself can ask for, between its creation and its
//! `exec`. `std::process::Command` can run such a step (`pre_exec`), but then it copies the whole
//! host with `fork`: a host with 500 MiB resident spends about 30 ms in the kernel per plugin
//! start, against about 1 ms with `posix_spawn`'s `vfork`. So on Linux the child is created
//! here the way `posix_spawn` creates it — `clone(CLONE_VM | CLONE_VFORK)`, the child borrowing
//! the host's memory on a small stack of its own until it execs — with a `pidfd` to wait on it
//! and signal it without any pid-reuse race. Kernels older than 5.3 (no pollable pidfd) get
//! `Command` with `fork` instead, as do other Unix systems (which have no parent-death signal).
//!
//! The kernel ties the parent-death signal to the *thread* that created the child, not to the
//! process: a plugin started from a blocking-pool thread or a short-lived runtime's thread
//! would be sent `SIGTERM` when that thread ends, host alive or not. So on Linux every plugin
//! is created by one spawner thread that lives as long as the process (idle, blocked on its
//! queue, between starts).
//!
//! In the child, between `clone` and `exec`, only async-signal-safe calls run, on memory the
//! parent prepared: every allocation (paths, argument and environment vectors, pipes) happens
//! before `clone`. The spawner thread blocks every signal, so no handler of the host runs on
//! the child's borrowed memory; the child puts handled signals and `SIGPIPE` back to their
//! defaults and unblocks everything, as `Command` does, before it execs.
//!
//! No process outlives its plugin, within what the host can reach. Each plugin leads a process
//! group of its own (`setpgid` before `exec`), so what it forks stays in the group; where the
//! host may, it also enters a cgroup of its own ([`crate::cgroup`], on the `clone` path), which
//! holds even a daemon that left the group with `setsid`. Whenever the plugin ends — killed,
//! dropped, or exited by itself — the group gets `SIGKILL` and the cgroup `cgroup.kill` while
//! the plugin is not yet reaped: an unreaped pid cannot be reused, so neither can the number of
//! the group it leads. Only then is the plugin reaped. (A plugin sharing the host's terminal as
//! stdin stays in the host's process group, since a background group reading the terminal is
//! stopped with `SIGTTIN`; its descendants are ended through its cgroup only.)
//!
//! What remains possible: a plugin started without a cgroup (no writable cgroup v2, the `fork`
//! path) can start a daemon that leaves its group, and nothing ends that daemon. When the host
//! itself is killed with `SIGKILL`, no code of it runs: the parent-death signal reaches the
//! plugin only (as `SIGTERM`, Linux), and what the plugin started keeps running unless the
//! plugin ends it — until the next host in the same cgroup starts a plugin and sweeps what the
//! dead host left. The host does not make itself a child subreaper (`PR_SET_CHILD_SUBREAPER`):
//! that is a setting of the whole embedding process, under which every orphaned descendant of
//! every child it has — not only plugins — would be reparented to it, and a library cannot reap
//! those without taking exit statuses the embedding program waits for.

use std::ffi::OsString;
#[cfg(target_os = "linux")]
use std::ffi::{CString, OsStr};
use std::io;
#[cfg(target_os = "linux")]
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};

use tokio::net::unix::pipe;

/// How to start a child.
pub(crate) struct Command<'a> {
    /// The program: a path, or a bare name looked up in the child's `PATH`.
    pub program: &'a Path,
    pub args: &'a [OsString],
    /// The complete environment of the child.
    pub env: &'a [(OsString, OsString)],
    /// Whether the child shares the host's stdin (else it reads `/dev/null`).
    pub inherit_stdin: bool,
}

/// A started child and the read ends of its stdout and stderr.
pub(crate) struct Started {
    pub child: Child,
    pub stdout: pipe::Receiver,
    pub stderr: pipe::Receiver,
}

/// A child process, signalled and reaped only through this handle.
///
/// Dropping it before [`Child::wait`] returned kills the child and everything it started, and
/// leaves its reaping to a reaper thread (or to tokio), so it never stays a zombie.
pub(crate) struct Child {
    pid: u32,
    inner: Inner,
}

enum Inner {
    #[cfg(target_os = "linux")]
    Pidfd(linux::PidfdChild),
    Forked(Forked),
}

impl Child {
    /// The process id.
    pub(crate) fn id(&self) -> u32 {
        self.pid
    }

    /// Sends `SIGKILL` to the child and to everything it started; nothing happens once the
    /// child has been reaped.
    pub(crate) fn start_kill(&mut self) -> io::Result<()> {
        match &mut self.inner {
            #[cfg(target_os = "linux")]
            Inner::Pidfd(child) => child.kill(),
            Inner::Forked(child) => child.kill(),
        }
    }

    /// Waits for the child to exit, kills what it leaves running, and reaps it.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        match &mut self.inner {
            #[cfg(target_os = "linux")]
            Inner::Pidfd(child) => child.wait().await,
            Inner::Forked(child) => child.wait().await,
        }
    }
}

/// What ends a child's descendants: the process group it leads (when it has its own) and its
/// cgroup (where the host may have one).
struct Descendants {
    /// The process group, numbered as the child's pid.
    group: Option<libc::pid_t>,
    #[cfg(target_os = "linux")]
    cgroup: Option<crate::cgroup::Cgroup>,
}

impl Descendants {
    /// Sends `SIGKILL` to the group and the cgroup. Only while the child is not reaped: its
    /// pid, and so the group's number, cannot have been reused.
    fn kill(&self) {
        if let Some(group) = self.group {
            // SAFETY: killpg takes a process group id and a signal.
            if unsafe { libc::killpg(group, libc::SIGKILL) } != 0 {
                let error = io::Error::last_os_error();
                // ESRCH: the group has no members left.
                if error.raw_os_error() != Some(libc::ESRCH) {
                    tracing::debug!(group, %error, "cannot kill the plugin's process group");
                }
            }
        }
        #[cfg(target_os = "linux")]
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill();
        }
    }
}

/// Whether a plugin leads a process group of its own: not when it shares the host's stdin and
/// that is a terminal, which a background group cannot read.
fn own_group(inherit_stdin: bool) -> bool {
    // SAFETY: isatty only looks at descriptor 0.
    !(inherit_stdin && unsafe { libc::isatty(0) } == 1)
}

/// A child started by `std::process::Command`, waited on through `SIGCHLD` so that its exit is
/// seen before it is reaped.
struct Forked {
    child: tokio::process::Child,
    descendants: Descendants,
    /// Every `SIGCHLD` the host receives from when the child was started.
    exits: tokio::signal::unix::Signal,
}

impl Forked {
    /// Whether tokio has reaped the child.
    fn reaped(&self) -> bool {
        self.child.id().is_none()
    }

    fn kill(&mut self) -> io::Result<()> {
        if self.reaped() {
            return Ok(());
        }
        self.descendants.kill();
        match self.child.start_kill() {
            // tokio reports a child it already reaped as an error; so do nothing.
            Err(error) if error.kind() == io::ErrorKind::InvalidInput => Ok(()),
            other => other,
        }
    }

    async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(pid) = self.child.id() {
            // Not reaped until the descendants are killed: tokio reaps in `wait`.
            loop {
                if exited(pid)? {
                    self.descendants.kill();
                    break;
                }
                if self.exits.recv().await.is_none() {
                    // The runtime is shutting down; tokio's own wait is all there is.
                    break;
                }
            }
        }
        self.child.wait().await
    }
}

impl Drop for Forked {
    fn drop(&mut self) {
        // tokio kills the child itself (kill_on_drop) and reaps it later.
        if !self.reaped() {
            self.descendants.kill();
        }
    }
}

/// Whether our child `pid`, not yet reaped, has exited; it stays a zombie (`WNOWAIT`).
fn exited(pid: u32) -> io::Result<bool> {
    let pid = libc::id_t::from(pid);
    loop {
        // SAFETY: a zeroed siginfo_t is a valid value; waitid writes into it.
        let mut info = unsafe { std::mem::zeroed::<libc::siginfo_t>() };
        // SAFETY: waitid on our own child, with WNOWAIT: nothing is reaped.
        let waited = unsafe {
            libc::waitid(
                libc::P_PID,
                pid,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if waited == 0 {
            // Without a waitable child the signal number stays zero.
            return Ok(info.si_signo != 0);
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EINTR) => continue,
            // Not (or no longer) ours to wait for: the wait that reaps says more.
            Some(libc::ECHILD) => return Ok(true),
            _ => return Err(error),
        }
    }
}

/// Starts `command`, its stdout and stderr piped to the host; must be called on a tokio
/// runtime (the pipes and the child register with its reactor).
pub(crate) async fn spawn(command: Command<'_>) -> io::Result<Started> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|error| {
        io::Error::other(format!("no tokio runtime to start the plugin on: {error}"))
    })?;
    #[cfg(target_os = "linux")]
    if linux::PIDFD_SPAWN.load(std::sync::atomic::Ordering::Relaxed) {
        match linux::spawn_vfork(&command).await {
            Err(error) if linux::NoPidfd::is(&error) => {
                // No usable pidfd in this kernel (before 5.3): fork from now on.
                tracing::debug!(%error, "clone with a pidfd refused; plugins are forked");
                linux::PIDFD_SPAWN.store(false, std::sync::atomic::Ordering::Relaxed);
            }
            other => return other,
        }
    }
    spawn_forked(&command, runtime).await
}

/// Starts `command` with `std::process::Command` (`fork`, or `posix_spawn` where there is no
/// parent-death signal to ask for), in a process group of its own unless [`own_group`] says
/// otherwise.
async fn spawn_forked(
    command: &Command<'_>,
    runtime: tokio::runtime::Handle,
) -> io::Result<Started> {
    let own_group = own_group(command.inherit_stdin);
    let mut forked = tokio::process::Command::new(command.program);
    forked
        .args(command.args)
        .env_clear()
        .envs(command.env.iter().map(|(key, value)| (key, value)))
        .stdin(if command.inherit_stdin {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if own_group {
        forked.process_group(0);
    }
    // The SIGCHLD stream exists before the child does, so its exit cannot be missed.
    let start = move |mut forked: tokio::process::Command| {
        let _entered = runtime.enter();
        let exits = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        Ok::<_, io::Error>((forked.spawn()?, exits))
    };
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let (child, exits) = {
        // SAFETY: the closure runs in the forked child before exec and only calls
        // async-signal-safe functions (prctl, getppid, _exit).
        unsafe {
            let parent = std::process::id();
            forked.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl. (Not a signal to ourselves:
                // the host's handlers are still installed here.)
                if libc::getppid() as u32 != parent {
                    libc::_exit(127);
                }
                Ok(())
            });
        }
        on_spawner_thread(move || start(forked)).await??
    };
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let (child, exits) = start(forked)?;
    into_started(child, exits, own_group)
}

fn into_started(
    mut child: tokio::process::Child,
    exits: tokio::signal::unix::Signal,
    own_group: bool,
) -> io::Result<Started> {
    let not_piped = || io::Error::other("the child's stdout or stderr was not piped");
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("the child was reaped before it was handed over"))?;
    let stdout = child.stdout.take().ok_or_else(not_piped)?.into_owned_fd()?;
    let stderr = child.stderr.take().ok_or_else(not_piped)?.into_owned_fd()?;
    let descendants = Descendants {
        group: own_group.then_some(pid as libc::pid_t),
        #[cfg(target_os = "linux")]
        cgroup: None,
    };
    Ok(Started {
        child: Child {
            pid,
            inner: Inner::Forked(Forked {
                child,
                descendants,
                exits,
            }),
        },
        stdout: pipe::Receiver::from_owned_fd(stdout)?,
        stderr: pipe::Receiver::from_owned_fd(stderr)?,
    })
}

/// Runs `job` on the spawner thread (see the module documentation) and returns what it
/// returned.
#[cfg(any(target_os = "linux", target_os = "android"))]
async fn on_spawner_thread<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    submit(Box::new(move || {
        let _ = reply.send(job());
    }))?;
    answer
        .await
        .map_err(|_| io::Error::other("starting the plugin failed on the spawner thread"))
}

#[cfg(any(target_os = "linux", target_os = "android"))]
type Job = Box<dyn FnOnce() + Send>;

/// Queues `job` for the spawner thread, starting the thread when it is not running.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn submit(job: Job) -> io::Result<()> {
    use std::sync::{Mutex, PoisonError, mpsc};
    static SPAWNER: Mutex<Option<mpsc::Sender<Job>>> = Mutex::new(None);
    let mut spawner = SPAWNER.lock().unwrap_or_else(PoisonError::into_inner);
    let job = match spawner.as_ref() {
        Some(jobs) => match jobs.send(job) {
            Ok(()) => return Ok(()),
            // The thread is gone: start another.
            Err(mpsc::SendError(job)) => job,
        },
        None => job,
    };
    let (jobs, queue) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("plinth-spawner".to_owned())
        .spawn(move || {
            // No signal handler may run while a child borrows this thread's memory.
            // SAFETY: sigfillset initializes `all`; pthread_sigmask only reads it.
            unsafe {
                let mut all = std::mem::zeroed::<libc::sigset_t>();
                libc::sigfillset(&mut all);
                libc::pthread_sigmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
            }
            for job in queue {
                // A job that panics (its caller hears of it: its reply is dropped) must not
                // take the thread, and with it every later start, down.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
        })?;
    jobs.send(job)
        .map_err(|_| io::Error::other("the plugin spawner thread stopped as it started"))?;
    *spawner = Some(jobs);
    Ok(())
}

/// `value` as a C string, or an error naming what held a NUL byte.
#[cfg(target_os = "linux")]
fn c_string(what: &str, value: &OsStr) -> io::Result<CString> {
    CString::new(value.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the plugin's {what} contains a NUL byte: {value:?}"),
        )
    })
}

/// The environment with one value per name, the last given (as `Command::envs` keeps it):
/// a program reading its environment would find the first.
#[cfg(target_os = "linux")]
fn dedup_env(env: &[(OsString, OsString)]) -> std::collections::BTreeMap<&OsStr, &OsStr> {
    env.iter()
        .map(|(key, value)| (key.as_os_str(), value.as_os_str()))
        .collect()
}

/// The paths to try for `program`: itself when it names a path, else each directory of the
/// child's `PATH` (`/bin:/usr/bin` without one) joined with it, as `execvp` does.
#[cfg(target_os = "linux")]
fn candidates(program: &Path, env: &[(OsString, OsString)]) -> io::Result<Vec<CString>> {
    if program.as_os_str().is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the plugin's path is empty",
        ));
    }
    if program.as_os_str().as_bytes().contains(&b'/') {
        return Ok(vec![c_string("path", program.as_os_str())?]);
    }
    let search = env
        .iter()
        .rev()
        .find(|(key, _)| key == "PATH")
        .map(|(_, value)| value.clone())
        .unwrap_or_else(|| OsString::from("/bin:/usr/bin"));
    std::env::split_paths(&search)
        .map(|dir| {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".").to_owned()
            } else {
                dir
            };
            c_string("path", dir.join(program).as_os_str())
        })
        .collect()
}

#[cfg(target_os = "linux")]
mod linux {
    //! The `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)` child (see the parent module).

    use std::ffi::{CString, c_int, c_void};
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;
    use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;
    use tokio::net::unix::pipe;

    use super::{
        Child, Command, Descendants, Inner, Started, c_string, candidates, dedup_env,
        on_spawner_thread, own_group,
    };
    use crate::cgroup::Cgroup;

    /// Whether children are created with `clone` and a pidfd (cleared when the kernel refuses).
    pub(super) static PIDFD_SPAWN: AtomicBool = AtomicBool::new(true);

    /// Why this kernel cannot give a usable pidfd: the one error on which a start falls back
    /// to `fork` (an exec error of the same kind must not switch every later start over).
    #[derive(Debug)]
    pub(super) struct NoPidfd(String);

    impl NoPidfd {
        fn error(reason: impl Into<String>) -> io::Error {
            io::Error::new(io::ErrorKind::Unsupported, NoPidfd(reason.into()))
        }

        /// Whether `error` is one.
        pub(super) fn is(error: &io::Error) -> bool {
            error.get_ref().is_some_and(|inner| inner.is::<NoPidfd>())
        }
    }

    impl std::fmt::Display for NoPidfd {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for NoPidfd {}

    /// The child's stack: it only makes a few system calls before exec.
    const STACK_SIZE: usize = 64 << 10;

    /// Everything the child needs, prepared by the parent.
    struct Plan {
        candidates: Vec<CString>,
        argv: Vec<*const libc::c_char>,
        envp: Vec<*const libc::c_char>,
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
        parent: libc::pid_t,
        /// Whether the child leads a process group of its own.
        own_group: bool,
        /// The `cgroup.procs` of the child's cgroup, when it has one.
        cgroup_procs: Option<OwnedFd>,
        /// Where the child leaves the errno of its failed exec (0: it did exec).
        exec_error: AtomicI32,
        /// Where the child leaves the errno of its failed move into its cgroup (0: it moved,
        /// or has no cgroup); it execs regardless.
        cgroup_error: AtomicI32,
    }

    /// A child created with a pidfd.
    pub(super) struct PidfdChild {
        pid: libc::pid_t,
        pidfd: AsyncFd<OwnedFd>,
        /// How it exited, once reaped.
        status: Option<ExitStatus>,
        descendants: Descendants,
    }

    impl PidfdChild {
        pub(super) fn kill(&mut self) -> io::Result<()> {
            if self.status.is_some() {
                return Ok(());
            }
            self.descendants.kill();
            send_kill(self.pidfd.get_ref().as_raw_fd())
        }

        pub(super) async fn wait(&mut self) -> io::Result<ExitStatus> {
            if let Some(status) = self.status {
                return Ok(status);
            }
            loop {
                let mut ready = self.pidfd.readable().await?;
                if !super::exited(self.pid as u32)? {
                    ready.clear_ready();
                    continue;
                }
                // Exited, not yet reaped: what it leaves running goes first.
                self.descendants.kill();
                let mut status = 0;
                // SAFETY: waitpid writes the status into a local; the pid is ours and not yet
                // reaped (only this handle reaps it), so it cannot have been reused.
                match unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) } {
                    0 => ready.clear_ready(),
                    -1 => {
                        let error = io::Error::last_os_error();
                        if error.kind() != io::ErrorKind::Interrupted {
                            return Err(error);
                        }
                    }
                    _ => {
                        let status = ExitStatus::from_raw(status);
                        self.status = Some(status);
                        return Ok(status);
                    }
                }
            }
        }
    }

    impl Drop for PidfdChild {
        fn drop(&mut self) {
            if self.status.is_none() {
                self.descendants.kill();
                let _ = send_kill(self.pidfd.get_ref().as_raw_fd());
                // The reaper needs a pidfd of its own: this one leaves with the AsyncFd.
                reap_later(self.pid, self.pidfd.get_ref().try_clone().ok());
            }
        }
    }

    /// A child just created, not yet handed to a [`PidfdChild`]: dropped (say, because the
    /// caller gave up waiting for it), it kills and reaps the child.
    struct Created {
        pid: libc::pid_t,
        pidfd: Option<OwnedFd>,
        descendants: Option<Descendants>,
    }

    impl Drop for Created {
        fn drop(&mut self) {
            if let Some(pidfd) = self.pidfd.take() {
                if let Some(descendants) = &self.descendants {
                    descendants.kill();
                }
                let _ = send_kill(pidfd.as_raw_fd());
                reap_later(self.pid, Some(pidfd));
            }
        }
    }

    /// A killed child for the reaper, with its pidfd when there is one to poll.
    type Reap = (libc::pid_t, Option<OwnedFd>);

    /// Hands a killed child to the reaper thread, which waits for its exit without holding up
    /// anything else (a killed process can take a while to go: a large address space to tear
    /// down, a hung network file system call).
    fn reap_later(pid: libc::pid_t, pidfd: Option<OwnedFd>) {
        use std::sync::{Mutex, PoisonError, mpsc};
        static REAPER: Mutex<Option<mpsc::Sender<Reap>>> = Mutex::new(None);
        let mut reaper = REAPER.lock().unwrap_or_else(PoisonError::into_inner);
        let child = match reaper.as_ref() {
            Some(queue) => match queue.send((pid, pidfd)) {
                Ok(()) => return,
                Err(mpsc::SendError(child)) => child,
            },
            None => (pid, pidfd),
        };
        let (queue, children) = mpsc::channel::<Reap>();
        let started = std::thread::Builder::new()
            .name("plinth-reaper".to_owned())
            .spawn(move || reap(children));
        if let Err(error) = started {
            tracing::warn!(pid, %error, "no thread to reap a killed plugin; it stays a zombie");
            return;
        }
        if queue.send(child).is_ok() {
            *reaper = Some(queue);
        }
    }

    /// The reaper thread: reaps each child once it has exited, polling the pidfds of those
    /// still running (and every 100 ms regardless, for pidfds a kernel before 5.3 cannot poll).
    fn reap(children: std::sync::mpsc::Receiver<Reap>) {
        let mut pending: Vec<Reap> = Vec::new();
        loop {
            if pending.is_empty() {
                match children.recv() {
                    Ok(child) => pending.push(child),
                    Err(_) => return,
                }
            }
            pending.extend(children.try_iter());
            pending.retain(|(pid, _)| {
                let mut status = 0;
                // SAFETY: waitpid writes into a local; the pid is ours and not yet reaped.
                match unsafe { libc::waitpid(*pid, &mut status, libc::WNOHANG) } {
                    0 => true,
                    -1 => io::Error::last_os_error().kind() == io::ErrorKind::Interrupted,
                    _ => false,
                }
            });
            if !pending.is_empty() {
                let mut polled: Vec<libc::pollfd> = pending
                    .iter()
                    .map(|(_, pidfd)| libc::pollfd {
                        fd: pidfd.as_ref().map_or(-1, |pidfd| pidfd.as_raw_fd()),
                        events: libc::POLLIN,
                        revents: 0,
                    })
                    .collect();
                // SAFETY: `polled` is a valid array of its length.
                unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, 100) };
            }
        }
    }

    fn send_kill(pidfd: RawFd) -> io::Result<()> {
        // SAFETY: pidfd_send_signal takes a pidfd, a signal number and no siginfo.
        let sent = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd,
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        match sent {
            0 => Ok(()),
            // Exited but not yet reaped: nothing to kill.
            _ if io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// A pipe whose ends are both close-on-exec and above the standard streams (so the child's
    /// `dup2` onto 0, 1 or 2 never finds its source already there).
    fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into `fds`.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both were just opened and are owned here.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok((above_stdio(read)?, above_stdio(write)?))
    }

    fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
        if fd.as_raw_fd() > 2 {
            return Ok(fd);
        }
        // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor, owned here.
        let moved = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
        if moved == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        Ok(unsafe { OwnedFd::from_raw_fd(moved) })
    }

    fn dev_null() -> io::Result<OwnedFd> {
        let file = std::fs::OpenOptions::new().read(true).open("/dev/null")?;
        above_stdio(file.into())
    }

    /// Starts `command` with `clone` on the spawner thread.
    pub(super) async fn spawn_vfork(command: &Command<'_>) -> io::Result<Started> {
        let (owned, stdout, stderr) = prepare(command)?;
        let mut created = on_spawner_thread(move || clone_child(owned)).await??;
        let stdout = pipe::Receiver::from_owned_fd(stdout)?;
        let stderr = pipe::Receiver::from_owned_fd(stderr)?;
        let pidfd = created
            .pidfd
            .take()
            .ok_or_else(|| io::Error::other("the created child has no pidfd"))?;
        // SAFETY: the AsyncFd owns the pidfd, which stays open until it is dropped.
        let pidfd = match unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) } {
            Ok(pidfd) => pidfd,
            Err(failed) => {
                let (pidfd, error) = failed.into_parts();
                created.pidfd = Some(pidfd);
                // Linux 5.2 has pidfds that cannot be polled yet: fork instead.
                if error.raw_os_error() == Some(libc::EPERM) {
                    return Err(NoPidfd::error(format!(
                        "the pidfd cannot be polled (a kernel before 5.3?): {error}"
                    )));
                }
                return Err(error);
            }
        };
        let pid = created.pid;
        let descendants = created.descendants.take().unwrap_or(Descendants {
            group: None,
            cgroup: None,
        });
        Ok(Started {
            child: Child {
                pid: pid as u32,
                inner: Inner::Pidfd(PidfdChild {
                    pid,
                    pidfd,
                    status: None,
                    descendants,
                }),
            },
            stdout,
            stderr,
        })
    }

    /// Everything `clone_child` needs, made before it (no allocation happens in the child), and
    /// the host's ends of the stdout and stderr pipes.
    fn prepare(command: &Command<'_>) -> io::Result<(Owned, OwnedFd, OwnedFd)> {
        let (stdout, stdout_child) = pipe_pair()?;
        let (stderr, stderr_child) = pipe_pair()?;
        let args = command
            .args
            .iter()
            .map(|arg| c_string("argument", arg))
            .collect::<io::Result<Vec<_>>>()?;
        let env = dedup_env(command.env)
            .into_iter()
            .map(|(key, value)| {
                let mut pair = key.to_owned();
                pair.push("=");
                pair.push(value);
                c_string("environment", &pair)
            })
            .collect::<io::Result<Vec<_>>>()?;
        let owned = Owned {
            argv0: c_string("path", command.program.as_os_str())?,
            args,
            env,
            candidates: candidates(command.program, command.env)?,
            stdin: if command.inherit_stdin {
                None
            } else {
                Some(dev_null()?)
            },
            stdout: stdout_child,
            stderr: stderr_child,
            own_group: own_group(command.inherit_stdin),
        };
        Ok((owned, stdout, stderr))
    }

    /// What the plan points into, moved to the spawner thread.
    struct Owned {
        argv0: CString,
        args: Vec<CString>,
        env: Vec<CString>,
        candidates: Vec<CString>,
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
        own_group: bool,
    }

    /// Creates the child (on the spawner thread, whose signals are all blocked) in a cgroup of
    /// its own where the host may, and returns it once it has exec'd; reaps it and returns the
    /// exec error if it could not.
    fn clone_child(owned: Owned) -> io::Result<Created> {
        let mut cgroup = Cgroup::create();
        let cgroup_procs = match cgroup.as_ref().map(|cgroup| cgroup.procs()) {
            Some(Ok(procs)) => Some(above_stdio(procs)?),
            Some(Err(error)) => {
                tracing::debug!(%error, "cannot open the plugin's cgroup.procs; it runs without");
                cgroup = None;
                None
            }
            None => None,
        };
        let argv = std::iter::once(owned.argv0.as_ptr())
            .chain(owned.args.iter().map(|arg| arg.as_ptr()))
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let envp = owned
            .env
            .iter()
            .map(|pair| pair.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let plan = Plan {
            candidates: owned.candidates,
            argv,
            envp,
            stdin: owned.stdin,
            stdout: owned.stdout,
            stderr: owned.stderr,
            // SAFETY: getpid has no preconditions.
            parent: unsafe { libc::getpid() },
            own_group: owned.own_group,
            cgroup_procs,
            exec_error: AtomicI32::new(0),
            cgroup_error: AtomicI32::new(0),
        };
        let stack = Stack::new()?;
        let mut pidfd: c_int = -1;
        // SAFETY: the child runs `child_main` on its own stack, sharing this thread's memory
        // while this thread is suspended (CLONE_VFORK) until the child execs or exits; `plan`
        // and the strings its pointers refer to outlive that. With CLONE_PIDFD the kernel
        // stores the pidfd through the parent-tid pointer.
        let pid = unsafe {
            libc::clone(
                child_main,
                stack.top(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
                &plan as *const Plan as *mut c_void,
                &mut pidfd as *mut c_int,
            )
        };
        if pid == -1 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EINVAL) {
                return Err(NoPidfd::error(format!(
                    "clone with CLONE_PIDFD refused (a kernel before 5.2?): {error}"
                )));
            }
            return Err(error);
        }
        // SAFETY: the kernel opened this pidfd for us (if it knows CLONE_PIDFD).
        let pidfd = (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
        let exec_error = plan.exec_error.load(Ordering::Acquire);
        if exec_error != 0 {
            // The child has already exited (_exit after the failed exec).
            wait_blocking(pid);
            return Err(io::Error::from_raw_os_error(exec_error));
        }
        let Some(pidfd) = pidfd else {
            // Kernels before 5.2 ignore the flag (the bit of the long-gone CLONE_PID): the
            // child runs, but there is no pidfd to own it by. Stop it and fork instead. The pid
            // is not reaped yet, so it cannot name another process.
            // SAFETY: kill and waitpid on our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            wait_blocking(pid);
            return Err(NoPidfd::error("clone gave no pidfd (a kernel before 5.2?)"));
        };
        let cgroup_error = plan.cgroup_error.load(Ordering::Acquire);
        if cgroup_error != 0 {
            let error = io::Error::from_raw_os_error(cgroup_error);
            tracing::debug!(pid, %error, "the plugin could not enter its cgroup; it runs without");
            cgroup = None;
        }
        Ok(Created {
            pid,
            pidfd: Some(pidfd),
            descendants: Some(Descendants {
                group: plan.own_group.then_some(pid),
                cgroup,
            }),
        })
    }

    /// Waits for `pid` (ours, exited or killed) and reaps it.
    fn wait_blocking(pid: libc::pid_t) {
        let mut status = 0;
        // SAFETY: waitpid writes into a local; the pid is ours and not yet reaped.
        while unsafe { libc::waitpid(pid, &mut status, 0) } == -1
            && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
        {}
    }

    /// An mmap'd stack with a guard page below it.
    struct Stack {
        base: *mut c_void,
        len: usize,
    }

    impl Stack {
        fn new() -> io::Result<Stack> {
            // SAFETY: sysconf has no preconditions.
            let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
                .unwrap_or(4096)
                .max(4096);
            let guard = page;
            let len = STACK_SIZE.div_ceil(page) * page + guard;
            // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                    -1,
                    0,
                )
            };
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let stack = Stack { base, len };
            // SAFETY: the lowest page of our own mapping.
            if unsafe { libc::mprotect(base, guard, libc::PROT_NONE) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(stack)
        }

        /// The highest address: stacks grow down.
        fn top(&self) -> *mut c_void {
            // SAFETY: one past the end of the mapping, 16-byte aligned (page-aligned).
            unsafe { self.base.cast::<u8>().add(self.len).cast() }
        }
    }

    impl Drop for Stack {
        fn drop(&mut self) {
            // SAFETY: our own mapping, no longer used (the child has exec'd or exited).
            unsafe { libc::munmap(self.base, self.len) };
        }
    }

    /// The child, between `clone` and `exec`: only async-signal-safe calls, no allocation.
    extern "C" fn child_main(plan: *mut c_void) -> c_int {
        // SAFETY: the parent passes a `Plan` that outlives this function (it is suspended).
        let plan = unsafe { &*(plan as *const Plan) };
        // SAFETY: each call is async-signal-safe and only reads what the parent prepared.
        unsafe {
            // Signal handlers of the host must not run here; ignored SIGPIPE (Rust's default)
            // must not pass on to the plugin. Everything is still blocked (spawner thread).
            let mut action = std::mem::zeroed::<libc::sigaction>();
            for signal in 1..=libc::SIGRTMAX() {
                if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                    continue;
                }
                if libc::sigaction(signal, std::ptr::null(), &mut action) != 0 {
                    continue;
                }
                let handled =
                    action.sa_sigaction != libc::SIG_DFL && action.sa_sigaction != libc::SIG_IGN;
                if handled || signal == libc::SIGPIPE {
                    action.sa_sigaction = libc::SIG_DFL;
                    action.sa_flags = 0;
                    libc::sigaction(signal, &action, std::ptr::null_mut());
                }
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return fail(plan);
            }
            // The host may have died before the prctl above.
            if libc::getppid() != plan.parent {
                libc::_exit(127);
            }
            if plan.own_group && libc::setpgid(0, 0) != 0 {
                return fail(plan);
            }
            // Into the cgroup before anything can fork; a refusal leaves the plugin without one.
            if let Some(procs) = &plan.cgroup_procs
                && libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1
            {
                let errno = (*libc::__errno_location()).max(1);
                plan.cgroup_error.store(errno, Ordering::Release);
            }
            if let Some(stdin) = &plan.stdin
                && libc::dup2(stdin.as_raw_fd(), 0) == -1
            {
                return fail(plan);
            }
            if libc::dup2(plan.stdout.as_raw_fd(), 1) == -1
                || libc::dup2(plan.stderr.as_raw_fd(), 2) == -1
            {
                return fail(plan);
            }
            let mut none = std::mem::zeroed::<libc::sigset_t>();
            libc::sigemptyset(&mut none);
            libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            // As execvp: on to the next candidate when this one is missing or not ours to run,
            // reporting permission denied if any candidate was.
            let mut denied = false;
            for path in &plan.candidates {
                libc::execve(path.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr());
                match *libc::__errno_location() {
                    libc::EACCES => denied = true,
                    libc::ENOENT
                    | libc::ENOTDIR
                    | libc::ESTALE
                    | libc::ENODEV
                    | libc::ETIMEDOUT => {}
                    _ => return fail(plan),
                }
            }
            if denied {
                *libc::__errno_location() = libc::EACCES;
            }
            fail(plan)
        }
    }

    /// Leaves errno for the parent and exits.
    unsafe fn fail(plan: &Plan) -> c_int {
        // SAFETY: errno is this thread's; _exit ends the child without running anything else.
        unsafe {
            let errno = (*libc::__errno_location()).max(1);
            plan.exec_error.store(errno, Ordering::Release);
            libc::_exit(127)
        }
    }

    #[cfg(test)]
    mod tests {
        use std::ffi::OsString;
        use std::path::Path;

        use super::*;

        #[test]
        fn only_a_missing_pidfd_switches_starts_to_fork() {
            let exec_error = io::Error::from_raw_os_error(libc::EOPNOTSUPP);
            assert_eq!(exec_error.kind(), io::ErrorKind::Unsupported);
            assert!(!NoPidfd::is(&exec_error));
            let missing = NoPidfd::error("clone gave no pidfd");
            assert!(NoPidfd::is(&missing));
            assert_eq!(missing.to_string(), "clone gave no pidfd");
        }

        #[tokio::test]
        async fn a_child_nobody_took_is_killed_and_reaped() {
            // As when the caller stops waiting while the spawner thread creates the child.
            let args = [OsString::from("30")];
            let (owned, _stdout, _stderr) = prepare(&Command {
                program: Path::new("/bin/sleep"),
                args: &args,
                env: &[],
                inherit_stdin: false,
            })
            .expect("prepared");
            let created = on_spawner_thread(move || clone_child(owned))
                .await
                .expect("spawner")
                .expect("created");
            let pid = created.pid;
            assert!(Path::new(&format!("/proc/{pid}")).exists());
            drop(created);
            let gone = async {
                while Path::new(&format!("/proc/{pid}")).exists() {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            };
            tokio::time::timeout(std::time::Duration::from_secs(10), gone)
                .await
                .unwrap_or_else(|_| panic!("child {pid} was left behind"));
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    /// Both ways of starting a child, so the fallback stays tested on kernels with pidfds.
    async fn start(command: Command<'_>, forked: bool) -> io::Result<Started> {
        if forked {
            spawn_forked(&command, tokio::runtime::Handle::current()).await
        } else {
            spawn(command).await
        }
    }

    fn env() -> Vec<(OsString, OsString)> {
        vec![("PATH".into(), "/usr/bin:/bin".into())]
    }

    async fn run(script: &str, forked: bool) -> (String, String, ExitStatus) {
        run_with(script, &env(), false, forked).await
    }

    /// Runs `sh -c script` to its end: its stdout, stderr and exit status.
    async fn run_with(
        script: &str,
        env: &[(OsString, OsString)],
        inherit_stdin: bool,
        forked: bool,
    ) -> (String, String, ExitStatus) {
        let args = ["-c".into(), script.into()];
        let mut started = start(
            Command {
                program: Path::new("/bin/sh"),
                args: &args,
                env,
                inherit_stdin,
            },
            forked,
        )
        .await
        .expect("sh starts");
        let (mut out, mut err) = (String::new(), String::new());
        started
            .stdout
            .read_to_string(&mut out)
            .await
            .expect("stdout");
        started
            .stderr
            .read_to_string(&mut err)
            .await
            .expect("stderr");
        let status = started.child.wait().await.expect("wait");
        (out, err, status)
    }

    #[tokio::test]
    async fn output_and_exit_status_come_back_both_ways() {
        for forked in [false, true] {
            let (out, err, status) = run("echo out; echo err >&2; exit 3", forked).await;
            assert_eq!(
                (out.as_str(), err.as_str()),
                ("out\n", "err\n"),
                "forked {forked}"
            );
            assert_eq!(status.code(), Some(3), "forked {forked}");
        }
    }

    #[tokio::test]
    async fn the_child_starts_with_no_signal_blocked_or_ignored_and_only_stdio_open() {
        // The test harness, like every Rust program, ignores SIGPIPE, and the spawner thread
        // blocks everything: neither may reach the plugin.
        let script = "grep -E '^Sig(Blk|Ign)' /proc/self/status; exec ls /proc/self/fd";
        for forked in [false, true] {
            let (out, _, status) = run(script, forked).await;
            assert!(status.success(), "forked {forked}: {out}");
            let mask = |name: &str| {
                let line = out.lines().find(|line| line.starts_with(name)).expect(name);
                u64::from_str_radix(line.split_whitespace().nth(1).expect("mask"), 16).expect("hex")
            };
            assert_eq!(mask("SigBlk:"), 0, "forked {forked}");
            let sigpipe = 1 << (libc::SIGPIPE - 1);
            assert_eq!(mask("SigIgn:") & sigpipe, 0, "forked {forked}");
            // Descriptors are 0-2, the directory `ls` reads, and what this test process has open
            // without close-on-exec (a jobserver's pipe, say): nothing the spawn opened.
            let fds: Vec<i32> = out
                .lines()
                .filter_map(|line| line.trim().parse().ok())
                .collect();
            for fd in fds {
                // SAFETY: F_GETFD only reads the descriptor's flags.
                let inherited = unsafe { libc::fcntl(fd, libc::F_GETFD) };
                assert!(
                    fd <= 3 || (inherited != -1 && inherited & libc::FD_CLOEXEC == 0),
                    "forked {forked}: descriptor {fd} leaked into the child: {out}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_job_that_panics_fails_alone_and_the_spawner_goes_on() {
        let error = on_spawner_thread(|| -> u32 { panic!("a job gone wrong") })
            .await
            .expect_err("the panic is reported");
        assert!(error.to_string().contains("spawner thread"), "{error}");
        assert_eq!(on_spawner_thread(|| 7).await.expect("the next job runs"), 7);
        let (_, _, status) = run("exit 0", false).await;
        assert!(status.success());
    }

    #[tokio::test]
    async fn a_name_given_twice_takes_its_last_value_both_ways() {
        let env = vec![
            ("PLINTH_TWICE".into(), "first".into()),
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("PLINTH_TWICE".into(), "last".into()),
        ];
        for forked in [false, true] {
            let (out, _, _) = run_with("echo $PLINTH_TWICE", &env, false, forked).await;
            assert_eq!(out, "last\n", "forked {forked}");
        }
    }

    #[tokio::test]
    async fn stdin_is_dev_null_or_the_hosts() {
        let ours = std::fs::read_link("/proc/self/fd/0").expect("our stdin");
        for forked in [false, true] {
            for inherit_stdin in [false, true] {
                let script = "readlink /proc/self/fd/0";
                let (out, _, _) = run_with(script, &env(), inherit_stdin, forked).await;
                let expected = if inherit_stdin {
                    ours.display().to_string()
                } else {
                    "/dev/null".to_owned()
                };
                assert_eq!(out.trim(), expected, "forked {forked}");
            }
        }
    }

    #[tokio::test]
    async fn a_bare_name_is_looked_up_in_the_childs_path() {
        let args = ["-c".into(), "exit 0".into()];
        for forked in [false, true] {
            let found = vec![("PATH".into(), "/nonexistent:/usr/bin:/bin".into())];
            let mut started = start(
                Command {
                    program: Path::new("sh"),
                    args: &args,
                    env: &found,
                    inherit_stdin: false,
                },
                forked,
            )
            .await
            .expect("sh found on PATH");
            assert!(started.child.wait().await.expect("wait").success());
            let missing = vec![("PATH".into(), "/nonexistent".into())];
            let error = start(
                Command {
                    program: Path::new("sh"),
                    args: &args,
                    env: &missing,
                    inherit_stdin: false,
                },
                forked,
            )
            .await
            .err()
            .expect("no sh on that PATH");
            assert_eq!(error.kind(), io::ErrorKind::NotFound, "forked {forked}");
        }
    }

    #[tokio::test]
    async fn exec_failures_come_back_as_the_errors_exec_gave() {
        let dir = tempfile::tempdir().expect("temp dir");
        let not_executable = dir.path().join("plugin");
        std::fs::write(&not_executable, "#!/bin/sh\n").expect("write");
        let env = env();
        for forked in [false, true] {
            for (program, kind) in [
                (dir.path().join("missing"), io::ErrorKind::NotFound),
                (not_executable.clone(), io::ErrorKind::PermissionDenied),
            ] {
                let error = start(
                    Command {
                        program: &program,
                        args: &[],
                        env: &env,
                        inherit_stdin: false,
                    },
                    forked,
                )
                .await
                .err()
                .expect("does not start");
                assert_eq!(error.kind(), kind, "{} forked {forked}", program.display());
            }
        }
        let nul = ["a\0b".into()];
        let error = spawn(Command {
            program: Path::new("/bin/sh"),
            args: &nul,
            env: &env,
            inherit_stdin: false,
        })
        .await
        .err()
        .expect("a NUL byte is refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert!(error.to_string().contains("argument"), "{error}");
    }

    /// Whether `pid` has ended (a zombie no one reaps yet has).
    fn ended(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        }
    }

    /// Waits (boundedly) for `pid` to end.
    async fn assert_ends(pid: u32, what: &str) {
        for _ in 0..400 {
            if ended(pid) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("{what}: process {pid} outlived the child");
    }

    /// Starts `sh -c script` and reads the pid the script prints first.
    async fn start_printing_a_pid(script: &str, forked: bool) -> (Started, u32) {
        use tokio::io::AsyncBufReadExt;
        let args = ["-c".into(), script.into()];
        let env = env();
        let mut started = start(
            Command {
                program: Path::new("/bin/sh"),
                args: &args,
                env: &env,
                inherit_stdin: false,
            },
            forked,
        )
        .await
        .expect("sh starts");
        let mut line = String::new();
        tokio::io::BufReader::new(&mut started.stdout)
            .read_line(&mut line)
            .await
            .expect("a pid");
        let pid = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("printed {line:?}"));
        assert!(!ended(pid), "process {pid} is running");
        (started, pid)
    }

    #[tokio::test]
    async fn what_a_child_forked_ends_with_it_when_killed_dropped_or_exited_both_ways() {
        // The grandchild holds stdout and stderr open, as a plugin's helper would.
        let lingering = "sleep 300 & echo $!; wait";
        for forked in [false, true] {
            let (mut started, grandchild) = start_printing_a_pid(lingering, forked).await;
            started.child.start_kill().expect("kill");
            started.child.wait().await.expect("wait");
            assert_ends(grandchild, &format!("killed, forked {forked}")).await;

            let (started, grandchild) = start_printing_a_pid(lingering, forked).await;
            drop(started);
            assert_ends(grandchild, &format!("dropped, forked {forked}")).await;

            let exiting = "sleep 300 & echo $!; exit 0";
            let (mut started, grandchild) = start_printing_a_pid(exiting, forked).await;
            assert!(started.child.wait().await.expect("wait").success());
            assert_ends(grandchild, &format!("exited, forked {forked}")).await;
        }
    }

    #[tokio::test]
    async fn a_child_leads_its_own_process_group() {
        for forked in [false, true] {
            let (mut started, pid) = start_printing_a_pid("echo $$; exec sleep 300", forked).await;
            // SAFETY: getpgid only reads.
            assert_eq!(
                unsafe { libc::getpgid(pid as libc::pid_t) },
                pid as libc::pid_t
            );
            started.child.start_kill().expect("kill");
            started.child.wait().await.expect("wait");
        }
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_daemon_that_left_the_process_group_is_ended_through_the_cgroup() {
        if crate::cgroup::Cgroup::create().is_none() {
            eprintln!("no cgroup v2 this host may write: nothing ends a daemon; not tested");
            return;
        }
        // `setsid` moves the shell it runs (not a group leader) to a session of its own.
        for end in ["kill", "drop", "exit"] {
            let script = if end == "exit" {
                "setsid sh -c 'echo $$; exec sleep 300' & exit 0"
            } else {
                "setsid sh -c 'echo $$; exec sleep 300' & wait"
            };
            let (mut started, pid) = start_printing_a_pid(script, false).await;
            // SAFETY: getsid only reads.
            let session = unsafe { libc::getsid(pid as libc::pid_t) };
            assert_eq!(
                session, pid as libc::pid_t,
                "the daemon leads its own session"
            );
            match end {
                "kill" => {
                    started.child.start_kill().expect("kill");
                    started.child.wait().await.expect("wait");
                }
                "drop" => drop(started),
                _ => {
                    started.child.wait().await.expect("wait");
                }
            }
            assert_ends(pid, end).await;
        }
    }

    #[tokio::test]
    async fn a_killed_child_reports_the_signal_and_a_dropped_one_is_reaped() {
        let args = ["-c".into(), "sleep 30".into()];
        let env = env();
        for forked in [false, true] {
            let command = || Command {
                program: Path::new("/bin/sh"),
                args: &args,
                env: &env,
                inherit_stdin: false,
            };
            let mut started = start(command(), forked).await.expect("starts");
            started.child.start_kill().expect("kill");
            let status = started.child.wait().await.expect("wait");
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(libc::SIGKILL), "forked {forked}");
            // Killing a reaped child is not an error; waiting again gives the same status.
            started.child.start_kill().expect("kill after reaping");
            assert_eq!(started.child.wait().await.expect("wait again"), status);

            let dropped = start(command(), forked).await.expect("starts");
            let pid = dropped.child.id();
            drop(dropped);
            let gone = async {
                while std::fs::metadata(format!("/proc/{pid}")).is_ok() {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            };
            tokio::time::timeout(std::time::Duration::from_secs(10), gone)
                .await
                .unwrap_or_else(|_| panic!("dropped child {pid} was not reaped (forked {forked})"));
        }
    }
}
