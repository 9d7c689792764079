//! The admin listener's own limits: at most `http.max_connections` open
//! connections (others are closed at once), and a connection that sends
//! nothing for `http.header_read_timeout` (a request's headers trickled, or
//! an idle keep-alive) is closed, as is any connection older than
//! [`MAX_LIFETIME`]. Idle clients cannot exhaust the daemon's descriptors.
//!
//! Invariant: every accepted connection holds one permit until it is dropped.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// No admin connection lives longer than this, however busy.
pub const MAX_LIFETIME: Duration = Duration::from_secs(300);

/// A [`TcpListener`] that hands axum capped, timed connections.
pub struct Capped {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    idle: Duration,
}

impl Capped {
    pub fn new(inner: TcpListener, max_connections: usize, idle: Duration) -> Capped {
        Capped {
            inner,
            slots: Arc::new(Semaphore::new(max_connections)),
            idle,
        }
    }
}

impl axum::serve::Listener for Capped {
    type Io = Timed;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Timed, std::net::SocketAddr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match self.slots.clone().try_acquire_owned() {
                Ok(permit) => return (Timed::new(stream, permit, self.idle), addr),
                Err(_) => {
                    metrics::counter!("postrelay_http_connections_refused_total").increment(1);
                    drop(stream);
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection that fails its reads after `idle` without a byte, or once
/// [`MAX_LIFETIME`] has passed.
pub struct Timed {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    idle: Duration,
    idle_timer: Pin<Box<Sleep>>,
    lifetime: Pin<Box<Sleep>>,
}

impl Timed {
    fn new(stream: TcpStream, permit: OwnedSemaphorePermit, idle: Duration) -> Timed {
        let now = Instant::now();
        Timed {
            stream,
            _permit: permit,
            idle,
            idle_timer: Box::pin(tokio::time::sleep_until(now + idle)),
            lifetime: Box::pin(tokio::time::sleep_until(now + MAX_LIFETIME)),
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "admin connection timed out")
}

impl AsyncRead for Timed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                let next = Instant::now() + self.idle;
                self.idle_timer.as_mut().reset(next);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if self.idle_timer.as_mut().poll(cx).is_ready()
                    || self.lifetime.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Err(timed_out()));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl AsyncWrite for Timed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.lifetime.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(timed_out()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
