//! Accepted connections that are closed once they send nothing for a while. A live gRPC client
//! is never silent that long: the coordinator sends an HTTP/2 keepalive ping well within the
//! timeout ([`keepalive_interval`]) and every client answers it. A connection that never sends
//! the HTTP/2 preface (or a TLS hello), or whose peer vanished without a FIN, is dropped instead
//! of being kept forever.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_stream::{Stream, StreamExt, wrappers::TcpListenerStream};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How often the coordinator pings each connection: often enough that a live client's answers
/// keep it well inside `idle` (at most every 30 s).
pub fn keepalive_interval(idle: Duration) -> Duration {
    (idle / 3).min(Duration::from_secs(30))
}

/// The listener's connections, each with the read-idle cutoff and `TCP_NODELAY` (small RPCs
/// such as heartbeats are not held back to be coalesced).
pub fn incoming(
    listener: TcpListener,
    idle: Duration,
) -> impl Stream<Item = io::Result<IdleCutoff>> {
    TcpListenerStream::new(listener).map(move |conn| {
        let stream = conn?;
        stream.set_nodelay(true)?;
        Ok(IdleCutoff::new(stream, idle))
    })
}

/// A TCP connection whose reads fail with `TimedOut` once nothing has arrived for `idle`.
pub struct IdleCutoff {
    io: TcpStream,
    idle: Duration,
    last_read: Instant,
    timer: Pin<Box<Sleep>>,
}

impl IdleCutoff {
    pub fn new(io: TcpStream, idle: Duration) -> Self {
        let now = Instant::now();
        Self {
            io,
            idle,
            last_read: now,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
        }
    }
}

impl AsyncRead for IdleCutoff {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    // Cheaper than resetting the timer on every read: it is moved on only when
                    // it fires.
                    this.last_read = Instant::now();
                }
                Poll::Ready(result)
            }
            Poll::Pending => loop {
                if this.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let deadline = this.last_read + this.idle;
                if Instant::now() >= deadline {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connection sent nothing for {:?}", this.idle),
                    )));
                }
                this.timer.as_mut().reset(deadline);
            },
        }
    }
}

impl AsyncWrite for IdleCutoff {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Connected for IdleCutoff {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair(idle: Duration) -> (IdleCutoff, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (IdleCutoff::new(server, idle), client)
    }

    #[tokio::test]
    async fn a_silent_peer_is_cut_off_after_the_idle_time_and_a_talking_one_is_not() {
        let idle = Duration::from_millis(300);
        let (mut server, mut client) = pair(idle).await;
        let started = std::time::Instant::now();
        // Bytes every 100 ms keep the connection open past several idle periods.
        let talker = tokio::spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                client.write_all(b"x").await.unwrap();
            }
            client
        });
        let mut got = 0;
        let mut buf = [0u8; 8];
        while got < 10 {
            got += server.read(&mut buf).await.unwrap();
        }
        let _client = talker.await.unwrap();
        // Then silence: the next read fails once `idle` has passed since the last byte.
        let silent_from = std::time::Instant::now();
        let err = server.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(silent_from.elapsed() >= idle - Duration::from_millis(20));
        assert!(started.elapsed() >= Duration::from_millis(1000));
    }

    #[test]
    fn keepalive_pings_come_well_within_the_idle_time() {
        assert_eq!(
            keepalive_interval(Duration::from_secs(120)),
            Duration::from_secs(30)
        );
        assert_eq!(
            keepalive_interval(Duration::from_secs(3)),
            Duration::from_secs(1)
        );
    }
}
