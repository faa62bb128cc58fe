//! Where audit lines are written: a writer thread of their own, so a serving thread formats its
//! line and hands it over, and never waits for a system call. Under load the writer looks at
//! the queue every 2 ms and writes everything waiting in one go (lines leave at most a few
//! milliseconds after their request); when idle it parks and the next line wakes it.
//!
//! Nothing is dropped: when the writer falls behind by [`CAPACITY`] lines, serving threads wait
//! for it (an audit trail with holes is worse than a slower gateway). [`Sink::drain`] waits for
//! every line handed over so far, for the end of the process.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::time::{Duration, Instant};

/// Lines waiting at most before serving threads wait for the writer.
pub const CAPACITY: usize = 64 * 1024;

/// A writer thread and its queue.
#[derive(Clone)]
pub struct Sink {
    lines: SyncSender<Vec<u8>>,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    written: AtomicU64,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").finish_non_exhaustive()
    }
}

impl Sink {
    /// Starts the writer thread, writing to `out`.
    pub fn start(out: impl Write + Send + 'static) -> std::io::Result<Self> {
        let (lines, queue) = sync_channel(CAPACITY);
        let counts = Arc::new(Counts::default());
        let written = counts.clone();
        std::thread::Builder::new().name("uprox-audit".into()).spawn(move || run(queue, out, &written))?;
        Ok(Self { lines, counts })
    }

    /// Waits until every line handed over so far is written, or `limit` passes.
    pub fn drain(&self, limit: Duration) {
        let sent = self.counts.sent.load(Ordering::Acquire);
        let until = Instant::now() + limit;
        while self.counts.written.load(Ordering::Acquire) < sent && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// How long the writer sleeps between two looks at the queue while lines keep coming.
const PACE: Duration = Duration::from_millis(2);
/// Looks that found nothing, in a row, before the writer parks until the next line.
const IDLE_LOOKS: u32 = 50;

fn run(queue: Receiver<Vec<u8>>, out: impl Write, counts: &Counts) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut idle = 0;
    loop {
        // While lines keep coming the writer looks every PACE and senders never wake it (a wake
        // per line would cost every request a system call and a context switch); once idle it
        // parks, and the next line wakes it.
        let first = if idle >= IDLE_LOOKS {
            match queue.recv() {
                Ok(line) => Some(line),
                Err(_) => return,
            }
        } else {
            match queue.try_recv() {
                Ok(line) => Some(line),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => return,
            }
        };
        let Some(first) = first else {
            idle += 1;
            std::thread::sleep(PACE);
            continue;
        };
        idle = 0;
        let mut batch = 1;
        let _ = out.write_all(&first);
        while let Ok(line) = queue.try_recv() {
            let _ = out.write_all(&line);
            batch += 1;
        }
        let _ = out.flush();
        counts.written.fetch_add(batch, Ordering::Release);
        // The next look after a pause: looking again at once would write (and make a system
        // call for) every line or two as they trickle in, and keep a core busy doing it.
        std::thread::sleep(PACE);
    }
}

/// One event's bytes, handed to the writer when the formatter is done with it.
pub struct Line<'a> {
    bytes: Vec<u8>,
    sink: &'a Sink,
}

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if self.bytes.is_empty() {
            return;
        }
        self.sink.counts.sent.fetch_add(1, Ordering::Release);
        if self.sink.lines.send(std::mem::take(&mut self.bytes)).is_err() {
            // The writer thread is gone (it only ends with the process): nothing to count.
            self.sink.counts.written.fetch_add(1, Ordering::Release);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Sink {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line { bytes: Vec::with_capacity(1024), sink: self }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Mutex;

    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_whole_and_in_order_per_thread() {
        let out = Shared::default();
        let sink = Sink::start(out.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000 {
                        let mut line = tracing_subscriber::fmt::MakeWriter::make_writer(&sink);
                        write!(line, "{t} ").unwrap();
                        writeln!(line, "{i}").unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        sink.drain(Duration::from_secs(10));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 8_000, "nothing lost");
        for t in 0..4 {
            let mine: Vec<u32> =
                lines.iter().filter_map(|l| l.strip_prefix(&format!("{t} "))).map(|n| n.parse().unwrap()).collect();
            assert_eq!(mine, (0..2_000).collect::<Vec<_>>(), "whole lines, in order");
        }
    }
}
