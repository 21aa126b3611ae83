//! Frame I/O on a socket half: read whole frames (size-capped), write
//! frames with one flush per burst. Dialling a broker, in plain TCP or TLS.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;

use super::tls::UpstreamTls;
use crate::codec::CodecError;
use crate::codec::frame::{Frame, FrameError, decode_frame};

/// A connection to a broker.
pub enum BrokerStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Connects to `addr` (host:port) within `timeout`, then completes the TLS
/// handshake when `tls` is set. The error says which step failed.
pub async fn dial_broker(
    addr: &str,
    tls: Option<&UpstreamTls>,
    timeout: Duration,
) -> Result<BrokerStream, String> {
    let tcp = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("connect failed: {e}")),
        Err(_) => return Err("connect timed out".into()),
    };
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Ok(BrokerStream::Plain(tcp)),
        Some(t) => Ok(BrokerStream::Tls(Box::new(t.connect(addr, tcp).await?))),
    }
}

/// Reads length-prefixed frames. Incomplete input waits for more bytes; a
/// length over the cap is an error before any of the body is buffered.
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    max_frame_bytes: usize,
}

const READ_CHUNK: usize = 64 * 1024;

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, max_frame_bytes: usize) -> Self {
        FrameReader {
            inner,
            buf: BytesMut::with_capacity(READ_CHUNK),
            max_frame_bytes,
        }
    }

    /// The stream back; bytes read past the last frame are dropped.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The next frame, `Ok(None)` on a clean end of stream.
    pub async fn next(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            if let Some(f) = decode_frame(&mut self.buf, self.max_frame_bytes)? {
                return Ok(Some(f));
            }
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                // Grow with what has arrived (BytesMut at least doubles),
                // never by what a length prefix merely announces.
                self.buf.reserve(READ_CHUNK.max(self.buf.len()));
            }
            let n = self.inner.read_buf(&mut self.buf).await?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Codec(CodecError::Truncated(
                        "frame cut by end of stream",
                    )))
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_split_across_reads_are_reassembled() {
        let io = tokio_test_io(&[&[0, 0, 0, 3, 1], &[2], &[3, 0, 0, 0, 1, 9]]);
        let mut r = FrameReader::new(io, 100);
        assert_eq!(&r.next().await.unwrap().unwrap().body()[..], &[1, 2, 3]);
        assert_eq!(&r.next().await.unwrap().unwrap().body()[..], &[9]);
        assert!(r.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn stream_ending_mid_frame_is_an_error() {
        let io = tokio_test_io(&[&[0, 0, 0, 3, 1]]);
        let mut r = FrameReader::new(io, 100);
        assert!(r.next().await.is_err());
    }

    /// A reader that hands out the given chunks one read at a time.
    fn tokio_test_io(chunks: &[&[u8]]) -> impl AsyncRead + Unpin {
        let chunks: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
        ChunkReader { chunks, pos: 0 }
    }

    struct ChunkReader {
        chunks: Vec<Vec<u8>>,
        pos: usize,
    }

    impl AsyncRead for ChunkReader {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if self.pos < self.chunks.len() {
                let c = self.chunks[self.pos].clone();
                buf.put_slice(&c);
                self.pos += 1;
            }
            std::task::Poll::Ready(Ok(()))
        }
    }
}
