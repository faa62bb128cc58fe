//! The relay body: carries an upstream response body to the client frame by frame, with
//! bounded memory, while batching the frames that are *already* available into one write.
//!
//! Why: hyper's HTTP/1 client hands a response body over one chunk at a time through a channel
//! that holds a single chunk, so a consumer sees `Pending` after every chunk even when the next
//! ones sit decoded-ready in the connection's read buffer — and hyper's server flushes (one
//! `write` system call) every time the body it sends is `Pending`. An SSE answer of 20 events
//! would cost 20 writes. When the inner body turns `Pending` after a frame, the relay yields
//! to the scheduler (a deferred wake, run after the woken upstream connection task), collects
//! whatever that produced, and releases the batch once a couple of rounds bring nothing new; it never waits for data that has not arrived, so a real
//! token stream is relayed as promptly as before. A batch is capped at [`MAX_BATCH_BYTES`].
//!
//! It is also where a metered request's answer is read for its cost: every upstream frame goes
//! through the request's [`Meter`] (and, when the gateway asked upstream for usage the client
//! did not ask for, through [`StripUsage`]), and the meter is settled when the body ends or is
//! dropped — a client that goes away mid-stream is still charged.
//!
//! It also ends a response whose upstream falls silent for longer than its idle timeout, so a
//! stalled provider cannot hold a client connection forever.

use std::collections::VecDeque;
use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::body::BoxError;
use crate::spend::meter::Meter;
use crate::spend::strip::StripUsage;

/// Largest amount of data held back to batch.
pub const MAX_BATCH_BYTES: usize = 64 * 1024;

/// Scheduler rounds to wait, in a row, for a frame that is not there yet before releasing the
/// batch. hyper's client connection task needs two rounds to hand over a chunk already in its
/// read buffer (measured: one round batches nothing, two batch every ready chunk). A round is
/// a few microseconds; nothing waits for the network.
const IDLE_YIELDS: u8 = 2;

/// The upstream went silent for longer than the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent nothing for {0:?}")]
pub struct IdleTimeout(pub Duration);

/// See the module documentation.
pub struct Relay<B> {
    inner: B,
    /// Fires when the upstream sends nothing for `idle`; re-armed when frames arrive.
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// A frame arrived since the timer was last armed.
    progressed: bool,
    queue: VecDeque<Frame<Bytes>>,
    queued_bytes: usize,
    /// Releasing a batch: hand out queued frames before polling the inner body again.
    releasing: bool,
    /// Yields in a row that brought no new frame.
    idle_yields: u8,
    /// The inner body ended (with `Some(error)` when it failed).
    finished: Option<Option<BoxError>>,
    /// The request's meter, fed every frame; settled when the body ends or is dropped.
    meter: Option<Meter>,
    /// Removes the usage chunk the client did not ask for.
    strip: Option<StripUsage>,
}

impl<B> Relay<B> {
    /// Wraps an upstream body that may stay silent for at most `idle` between frames.
    pub fn new(inner: B, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            progressed: false,
            queue: VecDeque::new(),
            queued_bytes: 0,
            releasing: false,
            idle_yields: 0,
            finished: None,
            meter: None,
            strip: None,
        }
    }

    /// Wraps the body of an answer whose head is `parts`, metered by `meter` when there is
    /// one (told the status and whether the body is an event stream). With `strip_usage`, a
    /// successful event stream loses the usage-only chunk the gateway asked for on the client's
    /// behalf.
    pub fn answering(
        parts: &http::response::Parts,
        inner: B,
        idle: Duration,
        mut meter: Option<Meter>,
        strip_usage: bool,
    ) -> Self {
        let sse = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if let Some(meter) = &mut meter {
            meter.answered(parts.status, sse);
        }
        let mut relay = Self::new(inner, idle);
        relay.meter = meter;
        relay.strip = (strip_usage && sse && parts.status.is_success()).then(StripUsage::default);
        relay
    }

    /// Takes in one upstream frame: metered, stripped, queued.
    fn take_in(&mut self, frame: Frame<Bytes>) {
        let frame = match frame.into_data() {
            Ok(data) => {
                let maybe_usage = self.meter.as_mut().is_none_or(|meter| meter.feed(&data));
                let data = match &mut self.strip {
                    Some(strip) => match strip.frame_hinted(data, maybe_usage) {
                        Some(data) => data,
                        None => return,
                    },
                    None => data,
                };
                self.queued_bytes += data.len();
                Frame::data(data)
            }
            Err(other) => other,
        };
        self.queue.push_back(frame);
    }

    /// The upstream body ended: what the stripper held back goes out, the meter settles.
    fn end(&mut self, error: Option<BoxError>) {
        if let Some(rest) = self.strip.as_mut().and_then(StripUsage::finish) {
            self.queued_bytes += rest.len();
            self.queue.push_back(Frame::data(rest));
        }
        if let Some(meter) = &mut self.meter {
            if error.is_none() {
                meter.completed();
            } else {
                meter.settle();
            }
        }
        self.finished = Some(error);
    }

    fn release(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.queue.pop_front() {
            Some(frame) => {
                self.queued_bytes -= frame.data_ref().map_or(0, Bytes::len);
                self.releasing = !self.queue.is_empty();
                Poll::Ready(Some(Ok(frame)))
            }
            None => {
                self.releasing = false;
                match self.finished.as_mut() {
                    Some(error) => Poll::Ready(error.take().map(Err)),
                    None => Poll::Pending,
                }
            }
        }
    }
}

impl<B> Body for Relay<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.releasing || this.finished.is_some() {
            return this.release();
        }
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    this.take_in(frame);
                    this.idle_yields = 0;
                    this.progressed = true;
                    if this.queued_bytes >= MAX_BATCH_BYTES {
                        return this.release();
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.end(Some(e.into()));
                    return this.release();
                }
                Poll::Ready(None) => {
                    this.end(None);
                    return this.release();
                }
                Poll::Pending if this.queue.is_empty() => {
                    // Waiting on the network: (re-)arm the idle timer once per wait, not per frame.
                    if std::mem::take(&mut this.progressed) {
                        this.timer.as_mut().reset(tokio::time::Instant::now() + this.idle);
                    }
                    if this.timer.as_mut().poll(cx).is_ready() {
                        this.end(Some(Box::new(IdleTimeout(this.idle))));
                        return this.release();
                    }
                    return Poll::Pending;
                }
                Poll::Pending if this.idle_yields < IDLE_YIELDS => {
                    // Let the upstream connection task (which our read just woke) run first.
                    // A plain self-wake may be polled before it; tokio's yield defers our wake
                    // until the scheduler has run the others. Its first poll only registers
                    // that deferred wake, so the future can be dropped at once.
                    this.idle_yields += 1;
                    let _ = std::pin::pin!(tokio::task::yield_now()).poll(cx);
                    return Poll::Pending;
                }
                Poll::Pending => {
                    this.idle_yields = 0;
                    return this.release();
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.queue.is_empty() && (self.finished.is_some() || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if self.strip.is_some() {
            // Removing the usage chunk changes the length.
            return SizeHint::default();
        }
        let mut hint = self.inner.size_hint();
        let queued = self.queued_bytes as u64;
        hint.set_lower(hint.lower().saturating_add(queued));
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper.saturating_add(queued));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http_body_util::{BodyExt as _, StreamBody};

    type Chunk = Result<Frame<Bytes>, BoxError>;

    const IDLE: Duration = Duration::from_secs(60);

    /// A body fed by a channel, like hyper's client body.
    fn channel() -> (tokio::sync::mpsc::UnboundedSender<Chunk>, impl Body<Data = Bytes, Error = BoxError> + Unpin) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Chunk>();
        let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
        (tx, StreamBody::new(Box::pin(stream)))
    }

    fn data(s: &'static str) -> Chunk {
        Ok(Frame::data(Bytes::from_static(s.as_bytes())))
    }

    #[tokio::test]
    async fn passes_every_byte_in_order() {
        let frames: Vec<Chunk> = vec![data("a"), data("bc"), data("def")];
        let body = Relay::new(StreamBody::new(futures_util::stream::iter(frames)), IDLE);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abcdef");
    }

    #[tokio::test]
    async fn a_frame_is_released_without_waiting_for_the_next() {
        let (tx, inner) = channel();
        let mut body = Relay::new(inner, IDLE);
        tx.send(data("first")).unwrap();
        let first = tokio::time::timeout(std::time::Duration::from_secs(1), body.frame()).await;
        assert_eq!(first.unwrap().unwrap().unwrap().into_data().unwrap(), "first", "released while the stream is open");
        tx.send(data("second")).unwrap();
        drop(tx);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "second");
    }

    #[tokio::test]
    async fn frames_already_available_are_batched() {
        let (tx, inner) = channel();
        let mut body = Relay::new(inner, IDLE);
        for _ in 0..5 {
            tx.send(data("x")).unwrap();
        }
        // All five are ready: they come out back to back, with no Pending in between.
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut got = 0;
        let mut pendings = 0;
        while got < 5 && pendings < 10 {
            match Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(_))) => got += 1,
                Poll::Pending => pendings += 1,
                other => panic!("unexpected {:?}", other.map(|_| ())),
            }
        }
        assert_eq!(got, 5);
        assert!(
            pendings <= usize::from(IDLE_YIELDS),
            "yields to let the upstream catch up, then the batch: {pendings}"
        );
    }

    /// Records the run lengths of frames returned between two `Pending`s: one run is one write.
    struct Runs<B> {
        inner: B,
        current: usize,
        runs: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
    }

    impl<B: Body<Data = Bytes, Error = BoxError> + Unpin> Body for Runs<B> {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Chunk>> {
            let polled = Pin::new(&mut self.inner).poll_frame(cx);
            match &polled {
                Poll::Ready(Some(_)) => self.current += 1,
                Poll::Pending | Poll::Ready(None) if self.current > 0 => {
                    let run = std::mem::take(&mut self.current);
                    self.runs.lock().unwrap().push(run);
                }
                _ => {}
            }
            polled
        }
    }

    /// Like hyper's client: the producer hands over one chunk per scheduling round, so a plain
    /// consumer sees `Pending` after every chunk although the data is all there.
    #[tokio::test(flavor = "current_thread")]
    async fn chunks_handed_over_one_at_a_time_are_batched() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(1);
        tokio::spawn(async move {
            for _ in 0..20 {
                if tx.send(data("event")).await.is_err() {
                    return;
                }
            }
        });
        let inner = StreamBody::new(Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|c| (c, rx))
        })));
        let runs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let body = Runs { inner: Relay::new(inner, IDLE), current: 0, runs: runs.clone() };
        assert_eq!(body.collect().await.unwrap().to_bytes().len(), 20 * 5);
        let runs = runs.lock().unwrap().clone();
        assert!(runs.len() <= 3, "20 ready chunks should leave in very few writes, got runs {runs:?}");
    }

    #[tokio::test]
    async fn errors_come_after_the_data_before_them() {
        let frames: Vec<Chunk> = vec![data("ok"), Err("boom".into())];
        let mut body = Relay::new(StreamBody::new(futures_util::stream::iter(frames)), IDLE);
        assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap(), "ok");
        assert!(body.frame().await.unwrap().is_err());
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn batches_are_bounded() {
        let big = Bytes::from(vec![b'x'; MAX_BATCH_BYTES / 2 + 1]);
        let frames: Vec<Chunk> = (0..4).map(|_| Ok(Frame::data(big.clone()))).collect();
        let mut body = Relay::new(StreamBody::new(futures_util::stream::iter(frames)), IDLE);
        let _ = body.frame().await;
        assert!(body.queued_bytes < MAX_BATCH_BYTES, "never holds more than one batch");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_upstream_ends_the_response() {
        let (tx, inner) = channel();
        let mut body = Relay::new(inner, Duration::from_secs(5));
        tx.send(data("a")).unwrap();
        assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap(), "a");
        // Paused time advances to the timer: nothing more arrives, so the body fails.
        let next = body.frame().await.unwrap();
        assert!(next.unwrap_err().is::<IdleTimeout>());
        drop(tx);
    }

    #[tokio::test]
    async fn size_hint_is_the_inner_one_before_polling() {
        let body =
            Relay::new(http_body_util::Full::new(Bytes::from_static(b"12345")).map_err(|never| match never {}), IDLE);
        assert_eq!(body.size_hint().exact(), Some(5));
    }
}
