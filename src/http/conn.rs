//! The stream hyper reads requests from and writes responses to: a TCP
//! connection whose writes of mapped block bytes go out with sendfile(2).
//!
//! hyper writes a response as a list of buffers, the head and then the
//! body's `Bytes` as they are (it queues them rather than copying them,
//! since the stream takes vectored writes). A segment's body is a memory
//! map of its block file ([`crate::store::mapped`]), so on each write
//! [`Conn`] asks the registry whether the buffers lie in a live mapping:
//! the buffers before it are written first (marked as having more to
//! follow, so the head and the body leave in the same packets), then the
//! block's bytes are sent from its file, which the kernel hands to the
//! socket from the page cache; our process never reads them (the copy is
//! most of the CPU a segment costs otherwise). The file holds the same
//! bytes as the memory, so whatever sendfile cannot do (an error, a short
//! file) is written from memory: the client gets the same bytes either way.
//!
//! A write that makes no progress for the write timeout fails with
//! `TimedOut`, so hyper closes the connection: a client that requests a
//! large file and never reads it would otherwise hold its slot and the
//! body's read-ahead forever. The timer is armed only when the socket is
//! full, and reset, not reallocated, after that, so the hot path pays
//! nothing for it.

use crate::store::mapped::{FileSpan, MappedFiles};
use prometheus_client::metrics::counter::Counter;
use rustix::net::{SendAncillaryBuffer, SendFlags};
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// A served connection.
#[derive(Debug)]
pub(super) struct Conn {
    stream: TcpStream,
    mapped: Option<Arc<MappedFiles>>,
    /// Bytes written to any connection (heads, bodies, sendfile alike):
    /// one relaxed add per write, read by `/metrics` and the dashboard.
    sent: Counter,
    /// Of those, bytes sent from block files, when metrics are on.
    sendfile: Option<Counter>,
    write_timeout: Duration,
    /// Runs while writes wait on a full socket; made at the first wait.
    stall: Option<Pin<Box<Sleep>>>,
    stalled: bool,
}

impl Conn {
    /// `stream`, sending the bytes of blocks mapped in `mapped` from their
    /// files, counting what it writes in `sent` (and what sendfile sent in
    /// `sendfile`), and failing a write that makes no progress in
    /// `write_timeout`.
    pub(super) fn new(
        stream: TcpStream,
        mapped: Option<Arc<MappedFiles>>,
        sent: Counter,
        sendfile: Option<Counter>,
        write_timeout: Duration,
    ) -> Self {
        Self {
            stream,
            mapped,
            sent,
            sendfile,
            write_timeout,
            stall: None,
            stalled: false,
        }
    }

    /// Passes on a write's outcome, failing it once writes have waited
    /// `write_timeout` without progress.
    fn progress(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if r.is_ready() {
            self.stalled = false;
            return r;
        }
        let deadline = Instant::now() + self.write_timeout;
        let stall = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.stalled {
            stall.as_mut().reset(deadline);
            self.stalled = true;
        }
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took nothing of the response within the write timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Counts `written` bytes (`from_file` when sendfile sent them).
    fn count(&self, written: &Poll<io::Result<usize>>, from_file: bool) {
        let Poll::Ready(Ok(n)) = written else {
            return;
        };
        self.sent.inc_by(*n as u64);
        if from_file {
            if let Some(c) = &self.sendfile {
                c.inc_by(*n as u64);
            }
        }
    }

    /// One write: mapped block bytes from their file, the rest as they
    /// are; counted.
    fn poll_write_now(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let span = self.mapped.as_ref().and_then(|m| m.file_span(bufs));
        let (written, from_file) = match span {
            None => (
                Pin::new(&mut self.stream).poll_write_vectored(cx, bufs),
                false,
            ),
            // What comes before the block first (the head).
            Some((i, _)) if i > 0 => (self.poll_write_more(cx, &bufs[..i]), false),
            Some((_, span)) => match ready!(self.poll_sendfile(cx, &span)) {
                Ok(n) if n > 0 => {
                    if let Some(m) = &self.mapped {
                        m.note_sent(n);
                    }
                    (Poll::Ready(Ok(n)), true)
                }
                // Nothing sent (the file is shorter than the block, or
                // sendfile refused): the memory holds the same bytes. A
                // broken connection fails this write too.
                _ => (
                    Pin::new(&mut self.stream).poll_write(cx, &bufs[0][..span.len]),
                    false,
                ),
            },
        };
        self.count(&written, from_file);
        written
    }

    /// Runs `send` once the socket can take more.
    fn poll_send(
        &self,
        cx: &mut Context<'_>,
        send: impl Fn(&TcpStream) -> rustix::io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            let sent = self.stream.try_io(Interest::WRITABLE, || {
                send(&self.stream).map_err(io::Error::from)
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    /// Sends `span` from its file.
    fn poll_sendfile(&self, cx: &mut Context<'_>, span: &FileSpan) -> Poll<io::Result<usize>> {
        self.poll_send(cx, |s| {
            let mut offset = span.offset;
            rustix::fs::sendfile(s, &*span.file, Some(&mut offset), span.len)
        })
    }

    /// Writes `bufs`, telling the kernel that more follows at once.
    fn poll_write_more(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_send(cx, |s| {
            let flags = SendFlags::MORE | SendFlags::NOSIGNAL;
            rustix::net::sendmsg(s, bufs, &mut SendAncillaryBuffer::default(), flags)
        })
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = self.poll_write_now(cx, bufs);
        self.progress(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
