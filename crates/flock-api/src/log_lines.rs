//! Log lines written in batches by a thread of their own.
//!
//! A caller that logs appends its formatted line to a shared buffer under a lock and goes on:
//! no system call, and no wake-up of another thread per line. The writing thread wakes when the
//! buffer stops being empty, lets lines gather for [`GATHER_FOR`] (or until
//! [`WRITE_AT_BYTES`] wait), and writes them all with one `write`. A line therefore reaches
//! standard error at most [`GATHER_FOR`] after it was logged.
//!
//! Nothing is dropped. When [`MAX_WAITING_BYTES`] wait, a caller that logs waits for the
//! writer, as it would for standard error itself. Once the [`LogGuard`] drops, the lines still
//! waiting are written, and a line logged later is written by its caller. The guard waits at
//! most [`CLOSE_WAIT`] for that last write: a process whose standard error is stuck (a pipe
//! nobody reads) still ends.
//!
//! It replaced `tracing-appender`'s non-blocking writer, which woke its thread for every line
//! (one futex wake-up and one `write` a request at the default log level): `flock-bench --only
//! logging` measured that at 8 to 20% of the server's CPU per delivery over `warn` once the rest
//! of the path had become cheaper (docs/benchmarks.md, "Log lines in batches").

use std::io::Write;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// How long lines gather before they are written.
pub(crate) const GATHER_FOR: Duration = Duration::from_millis(20);

/// Waiting lines are written at once when they reach this many bytes.
const WRITE_AT_BYTES: usize = 256 * 1024;

/// A caller that logs waits while this many bytes wait to be written.
const MAX_WAITING_BYTES: usize = 4 * 1024 * 1024;

/// The longest a dropped [`LogGuard`] waits for the lines still waiting to be written.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

struct Waiting {
    bytes: Vec<u8>,
    /// Set when the guard drops: the writing thread writes what waits and ends.
    closed: bool,
}

struct Shared {
    waiting: Mutex<Waiting>,
    /// Wakes the writing thread.
    wake: Condvar,
    /// Wakes callers waiting for room.
    room: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends one line (or part of one) to what waits.
    fn push(&self, line: &[u8], direct: impl FnOnce(&[u8])) {
        let mut waiting = self.lock();
        while waiting.bytes.len() >= MAX_WAITING_BYTES && !waiting.closed {
            self.wake.notify_one();
            waiting = self
                .room
                .wait(waiting)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if waiting.closed {
            drop(waiting);
            direct(line);
            return;
        }
        let was_empty = waiting.bytes.is_empty();
        waiting.bytes.extend_from_slice(line);
        let full = waiting.bytes.len() >= WRITE_AT_BYTES;
        drop(waiting);
        if was_empty || full {
            self.wake.notify_one();
        }
    }

    /// The writing thread: batch after batch until closed, then what is left.
    fn write_batches(&self, out: &mut impl Write) {
        let mut batch = Vec::new();
        loop {
            let closed = {
                let mut waiting = self.lock();
                while waiting.bytes.is_empty() && !waiting.closed {
                    waiting = self
                        .wake
                        .wait(waiting)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                let until = Instant::now() + GATHER_FOR;
                while !waiting.closed && waiting.bytes.len() < WRITE_AT_BYTES {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    waiting = (self.wake.wait_timeout(waiting, left))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                std::mem::swap(&mut batch, &mut waiting.bytes);
                waiting.closed
            };
            self.room.notify_all();
            if !batch.is_empty() {
                let _ = out.write_all(&batch);
                let _ = out.flush();
                batch.clear();
            }
            if closed {
                return;
            }
        }
    }
}

/// Where `tracing-subscriber` writes log lines: the shared buffer.
#[derive(Clone)]
pub(crate) struct LogLines {
    shared: Arc<Shared>,
}

/// Keeps the writing thread; dropping it writes the lines still waiting and ends the thread
/// (waiting at most 1 s for it). Hold it until the process ends.
#[must_use = "the log lines still waiting are written when the guard drops"]
pub struct LogGuard {
    shared: Arc<Shared>,
    /// Answers once the writing thread has written its last lines.
    finished: Receiver<()>,
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogGuard").finish_non_exhaustive()
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        self.shared.room.notify_all();
        let _ = self.finished.recv_timeout(CLOSE_WAIT);
    }
}

/// A writer of log lines to `out` (standard error in the server), on a thread named
/// `flock-log`, and the guard that ends it.
///
/// # Errors
/// The thread could not be started.
pub(crate) fn start(mut out: impl Write + Send + 'static) -> std::io::Result<(LogLines, LogGuard)> {
    let shared = Arc::new(Shared {
        waiting: Mutex::new(Waiting {
            bytes: Vec::new(),
            closed: false,
        }),
        wake: Condvar::new(),
        room: Condvar::new(),
    });
    let writer = Arc::clone(&shared);
    let (finish, finished) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("flock-log".to_owned())
        .spawn(move || {
            writer.write_batches(&mut out);
            let _ = finish.send(());
        })?;
    Ok((
        LogLines {
            shared: Arc::clone(&shared),
        },
        LogGuard { shared, finished },
    ))
}

/// One caller's writes: appended to the shared buffer as they come (`tracing-subscriber`
/// formats a whole line, then writes it once).
pub(crate) struct LineWriter<'a> {
    shared: &'a Shared,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.shared.push(bytes, |late| {
            let _ = std::io::stderr().write_all(late);
        });
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogLines {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            shared: &self.shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test can read, counting the writes it got.
    #[derive(Clone, Default)]
    struct Sink {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<Mutex<usize>>,
    }

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.bytes.lock().unwrap().extend_from_slice(bytes);
            *self.writes.lock().unwrap() += 1;
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_in_order_in_a_few_writes_and_all_of_them_by_the_guards_drop() {
        let sink = Sink::default();
        let (lines, guard) = start(sink.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let lines = lines.clone();
                std::thread::spawn(move || {
                    for n in 0..5_000 {
                        let line = format!("thread {t} line {n}\n");
                        lines.make_writer().write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.bytes.lock().unwrap().clone()).unwrap();
        for t in 0..4 {
            let numbers: Vec<usize> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("thread {t} line ")))
                .map(|n| n.parse().unwrap())
                .collect();
            assert_eq!(numbers, (0..5_000).collect::<Vec<_>>(), "thread {t}");
        }
        let writes = *sink.writes.lock().unwrap();
        assert!(writes < 20_000 / 10, "20,000 lines in {writes} writes");
    }

    #[test]
    fn a_line_is_written_within_the_gathering_time_without_a_flush() {
        let sink = Sink::default();
        let (lines, _guard) = start(sink.clone()).unwrap();
        lines.make_writer().write_all(b"one line\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while sink.bytes.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the line was never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(&*sink.bytes.lock().unwrap(), b"one line\n");
    }

    /// A sink that holds every write until the test opens its gate, noting that a write came
    /// and how many bytes it took.
    #[derive(Clone, Default)]
    struct Gated {
        gate: Arc<(Mutex<bool>, Condvar)>,
        entered: Arc<Mutex<bool>>,
        bytes: Arc<Mutex<usize>>,
    }

    impl Gated {
        fn open(&self) {
            *self.gate.0.lock().unwrap() = true;
            self.gate.1.notify_all();
        }
    }

    impl Write for Gated {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            *self.entered.lock().unwrap() = true;
            let (open, cv) = &*self.gate;
            let mut open = open.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            *self.bytes.lock().unwrap() += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_caller_waits_for_room_instead_of_growing_the_buffer_or_dropping_lines() {
        let sink = Gated::default();
        let (lines, guard) = start(sink.clone()).unwrap();
        let line = vec![b'x'; 1024];
        let total = 3 * MAX_WAITING_BYTES / 1024;
        let logger = {
            let lines = lines.clone();
            let line = line.clone();
            std::thread::spawn(move || {
                for _ in 0..total {
                    lines.make_writer().write_all(&line).unwrap();
                }
            })
        };
        // The writer holds its first batch; the caller fills the buffer, then waits.
        let deadline = Instant::now() + Duration::from_secs(10);
        while lines.shared.lock().bytes.len() < MAX_WAITING_BYTES {
            assert!(Instant::now() < deadline, "the buffer never filled");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(50));
        assert!(!logger.is_finished(), "the caller waits for room");
        assert!(lines.shared.lock().bytes.len() < MAX_WAITING_BYTES + 1024);
        sink.open();
        logger.join().unwrap();
        drop(guard);
        assert_eq!(*sink.bytes.lock().unwrap(), total * 1024, "no line dropped");
    }

    #[test]
    fn a_dropped_guard_does_not_wait_forever_for_a_stuck_output() {
        let sink = Gated::default();
        let (lines, guard) = start(sink.clone()).unwrap();
        lines.make_writer().write_all(b"a line\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !*sink.entered.lock().unwrap() {
            assert!(Instant::now() < deadline, "the writer never wrote");
            std::thread::sleep(Duration::from_millis(5));
        }
        lines.make_writer().write_all(b"another line\n").unwrap();
        let dropper = std::thread::spawn(move || drop(guard));
        let deadline = Instant::now() + 10 * CLOSE_WAIT;
        while !dropper.is_finished() {
            assert!(
                Instant::now() < deadline,
                "the guard still waits for a stuck output"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        dropper.join().unwrap();
        sink.open();
    }
}
