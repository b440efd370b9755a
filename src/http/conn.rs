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
//! With metrics on, every write adds what it wrote to two counters (one
//! relaxed atomic add each), so the bytes served on the hot path are
//! counted without looking at them.

use crate::store::mapped::{FileSpan, MappedFiles};
use prometheus_client::metrics::counter::Counter;
use rustix::net::{SendAncillaryBuffer, SendFlags};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// A served connection.
#[derive(Debug)]
pub(super) struct Conn {
    stream: TcpStream,
    mapped: Option<Arc<MappedFiles>>,
    counters: Option<Counters>,
    /// Bytes written to any connection (heads, bodies, sendfile alike):
    /// one relaxed add per write, the dashboard's "bytes out over HTTP".
    sent: Arc<AtomicU64>,
}

/// What a connection counts of the bytes it writes.
#[derive(Debug, Clone)]
pub(super) struct Counters {
    /// Every byte written.
    pub(super) sent: Counter,
    /// Bytes sent from block files.
    pub(super) sendfile: Counter,
}

impl Conn {
    /// `stream`, sending the bytes of blocks mapped in `mapped` from their
    /// files, counting what it writes in `counters` and `sent`.
    pub(super) fn new(
        stream: TcpStream,
        mapped: Option<Arc<MappedFiles>>,
        counters: Option<Counters>,
        sent: Arc<AtomicU64>,
    ) -> Self {
        Self {
            stream,
            mapped,
            counters,
            sent,
        }
    }

    /// Counts `written` bytes (`from_file` when sendfile sent them).
    fn count(&self, written: &Poll<io::Result<usize>>, from_file: bool) {
        if let Poll::Ready(Ok(n)) = written {
            self.sent.fetch_add(*n as u64, Ordering::Relaxed);
        }
        if let (Some(c), Poll::Ready(Ok(n))) = (&self.counters, written) {
            c.sent.inc_by(*n as u64);
            if from_file {
                c.sendfile.inc_by(*n as u64);
            }
        }
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
