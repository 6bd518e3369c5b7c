//! The last lines a server wrote to stderr, for the log and `/health` when
//! it fails.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Notify;

/// How many lines are kept.
const LINES: usize = 10;
/// How much of one line is kept.
const LINE_BYTES: usize = 300;

/// The tail of a child's stderr.
#[derive(Clone, Debug, Default)]
pub struct StderrTail {
    lines: Arc<Mutex<VecDeque<String>>>,
    closed: Arc<Notify>,
}

impl StderrTail {
    /// Reads `stderr` in the background, keeping its last lines (and logging
    /// each at debug level).
    pub(crate) fn follow(&self, server: &str, stderr: tokio::process::ChildStderr) {
        let (tail, server) = (self.clone(), server.to_owned());
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            // Invalid UTF-8 or an endless line ends the tail, nothing worse.
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(server = %server, "stderr: {line}");
                let mut kept = tail.lines.lock();
                if kept.len() == LINES {
                    kept.pop_front();
                }
                kept.push_back(cut(line));
            }
            tail.closed.notify_waiters();
        });
    }

    /// The tail, lines joined with " | ".
    pub fn text(&self) -> String {
        let kept = self.lines.lock();
        kept.iter().cloned().collect::<Vec<_>>().join(" | ")
    }

    /// The tail once the process has had a moment to write its last words.
    pub(crate) async fn settled(&self) -> String {
        let _ = tokio::time::timeout(Duration::from_millis(200), self.closed.notified()).await;
        self.text()
    }
}

fn cut(mut line: String) -> String {
    if line.len() > LINE_BYTES {
        let mut end = LINE_BYTES;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push('…');
    }
    line
}
