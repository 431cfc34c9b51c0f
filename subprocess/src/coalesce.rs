//! Write coalescing for a plugin connection: while callers woken by answers are yet to run,
//! a small batch of frames waits one turn of the scheduler before it goes to the socket.
//!
//! The HTTP/2 connection task writes whenever it is polled with frames to send. When many
//! callers share a connection, a read that brings several answers wakes several callers, each
//! of which sends its next request; the connection task, woken by the first, would write that
//! one request alone, then the next, and so on (tokio runs a task woken by the running one
//! next): one system call per request, and as many wake-ups of the plugin's reader.
//! [`Coalesce`] holds a small batch back for one turn while other woken callers have not run
//! yet, so that their requests join it and the batch leaves in one write. [`Woken`] counts
//! those callers through the wakers of their answers. A lone caller never waits.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most bytes held back; a write that would go past it is sent through.
const HELD_MAX: usize = 64 << 10;

/// Counts the callers whose answers have woken them and that have not run since: they are
/// about to send their next requests.
#[derive(Clone, Debug, Default)]
pub(crate) struct Woken(Arc<AtomicUsize>);

impl Woken {
    /// Wraps the future of a call's answer so that its wake-up is counted until the caller
    /// polls it again (or drops it).
    pub(crate) fn watch<F>(&self, answer: F) -> Watched<F> {
        Watched {
            answer,
            watch: Arc::new(Watch {
                counted: AtomicBool::new(false),
                caller: AtomicWaker::new(),
                woken: self.0.clone(),
            }),
        }
    }

    /// Whether a held batch should wait: two or more callers are woken and yet to run. One is
    /// not enough, since that one may be the only caller (whose request cannot come before
    /// the batch leaves).
    fn should_wait(&self) -> bool {
        self.0.load(Ordering::Relaxed) >= 2
    }
}

/// A call's answer whose wake-up is counted in [`Woken`].
pub(crate) struct Watched<F> {
    answer: F,
    watch: Arc<Watch>,
}

/// The waker [`Watched`] gives the answer: it counts the wake-up once, then wakes the caller.
struct Watch {
    counted: AtomicBool,
    caller: AtomicWaker,
    woken: Arc<AtomicUsize>,
}

impl Watch {
    fn uncount(&self) {
        if self.counted.swap(false, Ordering::AcqRel) {
            self.woken.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Wake for Watch {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.counted.swap(true, Ordering::AcqRel) {
            self.woken.fetch_add(1, Ordering::Relaxed);
        }
        self.caller.wake();
    }
}

impl<F: Future + Unpin> Future for Watched<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // The caller is running: it no longer counts as woken.
        self.watch.uncount();
        self.watch.caller.register(cx.waker());
        let waker = Waker::from(self.watch.clone());
        Pin::new(&mut self.answer).poll(&mut Context::from_waker(&waker))
    }
}

impl<F> Drop for Watched<F> {
    fn drop(&mut self) {
        self.watch.uncount();
    }
}

/// A byte stream whose small writes are gathered and sent on flush, one scheduler turn late
/// when other calls are in flight (see the module documentation). Reads pass straight through.
pub(crate) struct Coalesce<T> {
    io: T,
    /// Bytes accepted and not yet written, from `sent` on.
    held: Vec<u8>,
    sent: usize,
    /// Whether the batch in `held` has already waited its turn.
    waited: bool,
    woken: Woken,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Coalesce<T> {
    pub(crate) fn new(io: T, woken: Woken) -> Coalesce<T> {
        Coalesce {
            io,
            held: Vec::new(),
            sent: 0,
            waited: false,
            woken,
        }
    }

    fn pending(&self) -> usize {
        self.held.len() - self.sent
    }

    /// Writes everything held to the stream.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.held.len() {
            let written =
                std::task::ready!(Pin::new(&mut self.io).poll_write(cx, &self.held[self.sent..]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += written;
        }
        self.held.clear();
        self.sent = 0;
        self.waited = false;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let total: usize = bufs.iter().map(|buf| buf.len()).sum();
        if this.pending() + total > HELD_MAX {
            std::task::ready!(this.poll_drain(cx))?;
            if total > HELD_MAX {
                // A large message goes straight through, without a copy.
                return Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
            }
        }
        for buf in bufs {
            this.held.extend_from_slice(buf);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pending() > 0 && !this.waited && this.woken.should_wait() {
            // One turn for the callers already woken to add their requests: waking this task
            // from its own poll puts it at the back of the scheduler's queue.
            this.waited = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        std::task::ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        std::task::ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` answers woken and not yet polled again, as a read that brings `n` answers leaves
    /// their callers.
    fn woken_answers(woken: &Woken, n: usize) -> Vec<Watched<std::future::Pending<()>>> {
        (0..n)
            .map(|_| {
                let answer = woken.watch(std::future::pending());
                Waker::from(answer.watch.clone()).wake();
                answer
            })
            .collect()
    }

    /// A stream that records each write it is given, taking at most `per_write` bytes and
    /// answering every other write with `Pending` when `stutter` is set.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        per_write: Option<usize>,
        stutter: bool,
        refused_last: bool,
        flushed: usize,
        shut: bool,
    }

    impl AsyncRead for Recorder {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.stutter && !self.refused_last {
                self.refused_last = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.refused_last = false;
            let taken = buf.len().min(self.per_write.unwrap_or(usize::MAX));
            self.writes.push(buf[..taken].to_vec());
            Poll::Ready(Ok(taken))
        }

        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushed += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shut = true;
            Poll::Ready(Ok(()))
        }
    }

    /// A waker that remembers being woken.
    #[derive(Default)]
    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn write(coalesce: &mut Coalesce<Recorder>, cx: &mut Context<'_>, bytes: &[u8]) {
        let written = Pin::new(coalesce).poll_write(cx, bytes);
        assert!(matches!(written, Poll::Ready(Ok(n)) if n == bytes.len()));
    }

    fn flush(coalesce: &mut Coalesce<Recorder>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(coalesce).poll_flush(cx)
    }

    #[test]
    fn a_lone_caller_is_written_whole_on_its_first_flush() {
        let woken = Woken::default();
        // Its own answer woke it: one woken caller is not a reason to wait.
        let _answer = woken_answers(&woken, 1);
        let mut coalesce = Coalesce::new(Recorder::default(), woken.clone());
        let woken = Arc::new(Flag::default());
        let waker = std::task::Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        write(&mut coalesce, &mut cx, b"headers");
        write(&mut coalesce, &mut cx, b"message");
        assert!(
            coalesce.io.writes.is_empty(),
            "nothing leaves before the flush"
        );
        assert!(matches!(flush(&mut coalesce, &mut cx), Poll::Ready(Ok(()))));
        assert_eq!(coalesce.io.writes, [b"headersmessage".to_vec()]);
        assert_eq!(coalesce.io.flushed, 1);
        assert!(!woken.0.load(Ordering::SeqCst));
    }

    #[test]
    fn with_callers_woken_and_yet_to_run_a_batch_waits_one_turn_and_leaves_in_one_write() {
        let woken = Woken::default();
        let _answers = woken_answers(&woken, 2);
        let mut coalesce = Coalesce::new(Recorder::default(), woken.clone());
        let woken = Arc::new(Flag::default());
        let waker = std::task::Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        write(&mut coalesce, &mut cx, b"one");
        assert!(flush(&mut coalesce, &mut cx).is_pending());
        assert!(
            woken.0.load(Ordering::SeqCst),
            "the task is queued again at once"
        );
        assert!(coalesce.io.writes.is_empty());
        write(&mut coalesce, &mut cx, b"two");
        assert!(matches!(flush(&mut coalesce, &mut cx), Poll::Ready(Ok(()))));
        assert_eq!(coalesce.io.writes, [b"onetwo".to_vec()]);

        // The next batch waits its own turn again.
        woken.0.store(false, Ordering::SeqCst);
        write(&mut coalesce, &mut cx, b"three");
        assert!(flush(&mut coalesce, &mut cx).is_pending());
        assert!(woken.0.load(Ordering::SeqCst));
        assert!(matches!(flush(&mut coalesce, &mut cx), Poll::Ready(Ok(()))));
        assert_eq!(coalesce.io.writes.last().unwrap(), b"three");

        // Nothing held: a flush does not wait.
        woken.0.store(false, Ordering::SeqCst);
        assert!(matches!(flush(&mut coalesce, &mut cx), Poll::Ready(Ok(()))));
        assert!(!woken.0.load(Ordering::SeqCst));
    }

    #[test]
    fn a_large_write_goes_through_after_what_was_held_and_in_order() {
        let woken = Woken::default();
        let _answers = woken_answers(&woken, 2);
        let mut coalesce = Coalesce::new(Recorder::default(), woken.clone());
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        write(&mut coalesce, &mut cx, b"small");
        let large = vec![9u8; HELD_MAX + 1];
        let head = b"frame header";
        let slices = [io::IoSlice::new(head), io::IoSlice::new(&large)];
        let written = Pin::new(&mut coalesce).poll_write_vectored(&mut cx, &slices);
        // The recorder takes the first slice of a vectored write, as a stream may.
        assert!(matches!(written, Poll::Ready(Ok(n)) if n == head.len()));
        assert_eq!(coalesce.io.writes, [b"small".to_vec(), head.to_vec()]);
        let written = Pin::new(&mut coalesce).poll_write(&mut cx, &large);
        assert!(matches!(written, Poll::Ready(Ok(n)) if n == large.len()));
        assert_eq!(coalesce.io.writes.len(), 3);
        assert_eq!(coalesce.pending(), 0);
    }

    #[test]
    fn a_stream_taking_a_few_bytes_at_a_time_gets_all_of_them_in_order() {
        let recorder = Recorder {
            per_write: Some(3),
            stutter: true,
            ..Recorder::default()
        };
        let mut coalesce = Coalesce::new(recorder, Woken::default());
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        write(&mut coalesce, &mut cx, b"abcdefgh");
        write(&mut coalesce, &mut cx, b"ijk");
        let mut polls = 0;
        while flush(&mut coalesce, &mut cx).is_pending() {
            polls += 1;
            assert!(polls < 100, "the flush never finished");
        }
        assert_eq!(coalesce.io.writes.concat(), b"abcdefghijk");
        assert!(coalesce.io.writes.iter().all(|write| write.len() <= 3));
        write(&mut coalesce, &mut cx, b"last");
        while Pin::new(&mut coalesce).poll_shutdown(&mut cx).is_pending() {}
        assert_eq!(coalesce.io.writes.concat(), b"abcdefghijklast");
        assert!(coalesce.io.shut);
    }

    #[test]
    fn a_stream_that_takes_nothing_is_an_error() {
        let recorder = Recorder {
            per_write: Some(0),
            ..Recorder::default()
        };
        let mut coalesce = Coalesce::new(recorder, Woken::default());
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        write(&mut coalesce, &mut cx, b"bytes");
        match flush(&mut coalesce, &mut cx) {
            Poll::Ready(Err(error)) => assert_eq!(error.kind(), io::ErrorKind::WriteZero),
            other => panic!("expected WriteZero, got {other:?}"),
        }
    }

    #[test]
    fn a_caller_counts_as_woken_once_and_until_it_polls_or_drops_its_answer() {
        let woken = Woken::default();
        let flag = Arc::new(Flag::default());
        let caller = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&caller);
        let (signal, receiver) = tokio::sync::oneshot::channel::<u8>();
        let mut answer = woken.watch(receiver);
        assert!(Pin::new(&mut answer).poll(&mut cx).is_pending());
        assert_eq!(woken.0.load(Ordering::SeqCst), 0);
        signal.send(7).unwrap();
        assert!(
            flag.0.load(Ordering::SeqCst),
            "the caller's own waker is woken"
        );
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        // A second wake-up before the caller runs is the same caller.
        Waker::from(answer.watch.clone()).wake();
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        assert!(matches!(
            Pin::new(&mut answer).poll(&mut cx),
            Poll::Ready(Ok(7))
        ));
        assert_eq!(woken.0.load(Ordering::SeqCst), 0);

        let dropped = woken_answers(&woken, 3);
        assert_eq!(woken.0.load(Ordering::SeqCst), 3);
        drop(dropped);
        assert_eq!(woken.0.load(Ordering::SeqCst), 0);
    }
}
