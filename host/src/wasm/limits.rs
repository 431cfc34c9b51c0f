//! Resource limits for guest instances: linear memory, call deadline, instance count.
//!
//! Memory is bounded per instance by a `ResourceLimiter` that turns a growth past the limit into
//! a trap carrying [`MemoryLimitExceeded`]; time is bounded per call by epoch interruption (see
//! the engine's ticker), which yields to the async runtime every tick and stops the guest with
//! [`DeadlineExceeded`] once the deadline has passed. Time spent awaiting the host (an async
//! host import) counts too: the whole call runs under a wall-clock timer that drops it at the
//! deadline.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmtime::ResourceLimiter;

/// Limits applied to every instance of one plugin.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest linear memory an instance may grow to, in bytes. Default: 256 MiB.
    pub max_memory: usize,
    /// How long one call may run before it is stopped; `None` for no deadline.
    /// Default: 30 seconds.
    pub call_timeout: Option<Duration>,
    /// How many instances may serve calls at once; further callers wait. Default: 16.
    ///
    /// Instances do not share memory: a guest that keeps state in memory (such as the
    /// in-memory kv example) sees each instance's own copy. Set this to 1 for such a guest, so
    /// that one instance serves every call in turn, as one go-plugin process would.
    pub max_instances: usize,
    /// Largest table an instance may grow to, in elements. Default: 1 000 000.
    pub max_table_elements: usize,
    /// Most host memory, in bytes, one call may take to receive the values the guest hands
    /// over (the arguments of a host import, the results of an export); `None` for four times
    /// [`max_memory`](Limits::max_memory), which fits any value the guest's memory can hold
    /// through typed bindings (a Rust `String` or `Vec` header is three times the size of the
    /// guest's). Dynamic calls ([`Dynamic`](super::Dynamic)) hold every list element as a
    /// `Val` of 32 bytes or more and reach the limit sooner. A call past it fails with
    /// [`Error::TooMuchData`](crate::Error::TooMuchData). Default: `None`.
    pub max_host_copy: Option<usize>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_memory: 256 << 20,
            call_timeout: Some(Duration::from_secs(30)),
            max_instances: 16,
            max_table_elements: 1_000_000,
            max_host_copy: None,
        }
    }
}

impl Limits {
    /// The host-copy limit in force: [`Limits::max_host_copy`], or four times the memory limit.
    pub fn host_copy_limit(&self) -> usize {
        self.max_host_copy
            .unwrap_or_else(|| self.max_memory.saturating_mul(4))
    }
}

/// The error a guest call fails with when it runs past its deadline.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineExceeded;

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the call ran past its deadline")
    }
}

impl std::error::Error for DeadlineExceeded {}

/// The error a guest fails with when it grows its memory past the limit.
#[derive(Debug, Clone, Copy)]
pub struct MemoryLimitExceeded {
    /// The size the guest asked for, in bytes.
    pub requested: usize,
    /// The limit, in bytes.
    pub limit: usize,
}

impl fmt::Display for MemoryLimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "memory growth to {} bytes refused: the limit is {} bytes",
            self.requested, self.limit
        )
    }
}

impl std::error::Error for MemoryLimitExceeded {}

/// The per-store limiter: refuses growth past the limits, trapping the guest.
#[derive(Debug)]
pub(crate) struct StoreLimiter {
    max_memory: usize,
    max_table_elements: usize,
}

impl StoreLimiter {
    pub(crate) fn new(limits: &Limits) -> StoreLimiter {
        StoreLimiter {
            max_memory: limits.max_memory,
            max_table_elements: limits.max_table_elements,
        }
    }
}

impl ResourceLimiter for StoreLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            return Err(MemoryLimitExceeded {
                requested: desired,
                limit: self.max_memory,
            }
            .into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.max_table_elements)
    }
}

/// Milliseconds since the engine started, advanced by the engine's ticker every tick.
///
/// Reading it is one atomic load, so starting a call's deadline costs no clock read; it lags
/// real time by at most one tick.
#[derive(Debug, Clone)]
pub(crate) struct CoarseClock {
    started: Instant,
    now_ms: Arc<AtomicU64>,
}

impl CoarseClock {
    pub(crate) fn new() -> CoarseClock {
        CoarseClock {
            started: Instant::now(),
            now_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::Relaxed)
    }

    /// Brings the clock up to date; called by the ticker.
    pub(crate) fn tick(&self) {
        let elapsed = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.now_ms.store(elapsed, Ordering::Relaxed);
    }
}

/// When the call in progress must stop, on a [`CoarseClock`].
#[derive(Debug, Clone)]
pub(crate) struct CallDeadline {
    clock: CoarseClock,
    at_ms: Option<u64>,
}

impl CallDeadline {
    pub(crate) fn new(clock: CoarseClock) -> CallDeadline {
        CallDeadline { clock, at_ms: None }
    }

    /// Starts the deadline for a call that may run for `timeout`. The clock lags by up to a
    /// tick, so one tick is added: the call is never stopped early, and at most two ticks late.
    pub(crate) fn start(&mut self, timeout: Option<Duration>, tick: Duration) {
        self.at_ms = timeout.map(|timeout| {
            let budget = u64::try_from((timeout + tick).as_millis()).unwrap_or(u64::MAX);
            self.clock.now_ms().saturating_add(budget)
        });
    }

    pub(crate) fn passed(&self) -> bool {
        self.at_ms.is_some_and(|at| self.clock.now_ms() >= at)
    }

    /// When the call must stop, in the clock's milliseconds; `None` for no deadline.
    pub(crate) fn at_ms(&self) -> Option<u64> {
        self.at_ms
    }
}

impl CoarseClock {
    /// Runs `future` until it completes or the clock reaches `at_ms`, whichever is first; the
    /// future is dropped when the deadline passes.
    ///
    /// The epoch deadline only counts time spent running wasm; this counts wall-clock time,
    /// so a call that awaits a host import past its deadline is stopped too. A call that
    /// completes without waiting (most do) never arms a timer.
    pub(crate) async fn bounded<F: Future>(
        &self,
        at_ms: Option<u64>,
        future: F,
    ) -> Result<F::Output, DeadlineExceeded> {
        let Some(at_ms) = at_ms else {
            return Ok(future.await);
        };
        let mut future = std::pin::pin!(future);
        let mut timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        std::future::poll_fn(|cx| {
            if let std::task::Poll::Ready(output) = future.as_mut().poll(cx) {
                return std::task::Poll::Ready(Ok(output));
            }
            let timer = timer.get_or_insert_with(|| {
                let left = at_ms.saturating_sub(self.now_ms());
                Box::pin(tokio::time::sleep(Duration::from_millis(left)))
            });
            match timer.as_mut().poll(cx) {
                std::task::Poll::Ready(()) => std::task::Poll::Ready(Err(DeadlineExceeded)),
                std::task::Poll::Pending => std::task::Poll::Pending,
            }
        })
        .await
    }
}
