//! Frame I/O on a socket half: read whole frames (size-capped), write
//! bursts of frames with vectored writes (no copy into a write buffer).
//! Dialling a broker, in plain TCP or TLS.

use std::io::IoSlice;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::tls::UpstreamTls;
use crate::codec::CodecError;
use crate::codec::frame::{Frame, LENGTH_PREFIX, decode_frame};

/// Errors of reading frames from a socket: I/O, or a frame the codec
/// refuses (a length outside the cap, a cut frame).
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

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
///
/// Small frames share one read buffer (several per `read`). A frame larger
/// than a read chunk gets a buffer of its own as it arrives, and reads stop
/// at its end. That buffer grows with the bytes received (see [`Ahead`]):
/// the part that came in with the previous read is copied once, and later
/// growth is a `realloc`, which glibc serves by remapping pages for blocks
/// above its mmap threshold (and by copying below it, at most about as
/// many bytes again as the frame holds, over all its doublings).
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    max_frame_bytes: usize,
    /// How far a frame's own buffer may be reserved ahead of its bytes.
    ahead: Ahead,
}

/// How far ahead of arriving bytes a large frame's buffer is reserved.
///
/// Either way the reservation follows the bytes received: at most the
/// larger of a fixed step and what has already arrived, so the buffer's
/// capacity stays within about twice the bytes a peer actually sent plus
/// one step. A length prefix alone (a 100 MiB frame announced on each of
/// many connections, nothing sent) reserves one step per connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ahead {
    /// Clients: steps of [`AHEAD`]. A client is not trusted, and may speak
    /// before authenticating.
    Client,
    /// The broker's responses: steps of [`BROKER_AHEAD`], since a Fetch
    /// response is often tens of MiB. Growing a buffer that large is a
    /// `realloc` that mostly remaps pages rather than copying them, so
    /// following the arriving bytes costs little over reserving the whole
    /// announced frame at once, and a broker (or whatever sits between it
    /// and us) cannot make the proxy reserve what it has not sent.
    Broker,
}

const READ_CHUNK: usize = 64 * 1024;
/// Step by which a client frame's own buffer grows ahead of its arriving
/// bytes (or by what has arrived, if more).
const AHEAD: usize = 1024 * 1024;
/// The same step for broker responses.
const BROKER_AHEAD: usize = 8 * 1024 * 1024;

impl Ahead {
    /// Bytes to reserve ahead when `arrived` bytes of a frame are buffered.
    fn step(self, arrived: usize) -> usize {
        let floor = match self {
            Ahead::Client => AHEAD,
            Ahead::Broker => BROKER_AHEAD,
        };
        floor.max(arrived)
    }
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, max_frame_bytes: usize) -> Self {
        Self::with_ahead(inner, max_frame_bytes, Ahead::Client)
    }

    pub fn with_ahead(inner: R, max_frame_bytes: usize, ahead: Ahead) -> Self {
        FrameReader {
            inner,
            buf: BytesMut::with_capacity(READ_CHUNK),
            max_frame_bytes,
            ahead,
        }
    }

    /// The stream back; bytes read past the last frame are dropped.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Whether a whole frame is already buffered (the next `next` returns
    /// without reading).
    pub fn has_buffered_frame(&self) -> bool {
        announced_total(&self.buf).is_some_and(|t| t <= self.buf.len())
    }

    /// The next frame, `Ok(None)` on a clean end of stream.
    pub async fn next(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            if let Some(f) = decode_frame(&mut self.buf, self.max_frame_bytes)? {
                return Ok(Some(f));
            }
            // decode_frame has checked the length against the cap.
            let total = announced_total(&self.buf);
            let n = match total {
                Some(total) if total > READ_CHUNK => {
                    let missing = total - self.buf.len();
                    let want = missing.min(self.ahead.step(self.buf.len()));
                    if self.buf.capacity() - self.buf.len() < want {
                        self.buf.reserve(want);
                    }
                    let mut limited = (&mut self.buf).limit(missing);
                    self.inner.read_buf(&mut limited).await?
                }
                _ => {
                    if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                        self.buf.reserve(READ_CHUNK);
                    }
                    self.inner.read_buf(&mut self.buf).await?
                }
            };
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

/// Bytes of the frame at the start of `buf` (prefix included), once its
/// length prefix is there.
fn announced_total(buf: &[u8]) -> Option<usize> {
    let prefix: [u8; LENGTH_PREFIX] = buf.get(..LENGTH_PREFIX)?.try_into().ok()?;
    usize::try_from(i32::from_be_bytes(prefix))
        .ok()
        .map(|n| n + LENGTH_PREFIX)
}

/// Most buffers handed to one `writev`.
const MAX_IOV: usize = 64;

/// Writes every buffer in `bufs`, in order, with as few vectored writes as
/// the socket allows, flushes, and empties `bufs`.
pub async fn write_all_vectored<W: AsyncWrite + Unpin>(
    w: &mut W,
    bufs: &mut Vec<Bytes>,
) -> std::io::Result<()> {
    let mut first = 0;
    while first < bufs.len() {
        let mut iov = [IoSlice::new(&[]); MAX_IOV];
        let mut k = 0;
        for b in bufs[first..].iter().take(MAX_IOV) {
            iov[k] = IoSlice::new(b);
            k += 1;
        }
        let mut n = w.write_vectored(&iov[..k]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let len = bufs[first].len();
            if n >= len {
                n -= len;
                first += 1;
            } else {
                bufs[first].advance(n);
                n = 0;
            }
        }
    }
    bufs.clear();
    // A no-op on TCP; a TLS stream may still hold records.
    w.flush().await
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

    #[tokio::test]
    async fn large_frames_between_small_ones_come_out_whole() {
        // Small, large (several read chunks), small, huge (past AHEAD),
        // small: every read hands out at most 10 000 bytes.
        let sizes = [3usize, 200_000, 5, 3 * AHEAD + 17, 1];
        let mut wire = Vec::new();
        let mut bodies = Vec::new();
        for (k, n) in sizes.iter().enumerate() {
            let body: Vec<u8> = (0..*n).map(|i| (i * 31 + k) as u8).collect();
            wire.extend_from_slice(&(*n as i32).to_be_bytes());
            wire.extend_from_slice(&body);
            bodies.push(body);
        }
        let mut r = FrameReader::new(
            SliceReader {
                data: wire,
                pos: 0,
                step: 10_000,
            },
            100 * 1024 * 1024,
        );
        for body in &bodies {
            let f = r.next().await.unwrap().unwrap();
            assert_eq!(f.body().len(), body.len());
            assert!(f.body()[..] == body[..]);
        }
        assert!(r.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn broker_frames_are_read_into_one_buffer() {
        let n = 3 * AHEAD + 5;
        let mut wire = (n as i32).to_be_bytes().to_vec();
        wire.extend((0..n).map(|i| (i % 251) as u8));
        let mut r = FrameReader::with_ahead(
            SliceReader {
                data: wire.clone(),
                pos: 0,
                step: 10_000,
            },
            100 * 1024 * 1024,
            Ahead::Broker,
        );
        let f = r.next().await.unwrap().unwrap();
        assert!(f.raw()[..] == wire[..]);
    }

    #[tokio::test]
    async fn a_length_prefix_alone_reserves_little() {
        // 50 MiB announced, 8 bytes sent: the buffer stays small, on the
        // client side and on the broker side.
        for (ahead, step) in [(Ahead::Client, AHEAD), (Ahead::Broker, BROKER_AHEAD)] {
            let mut wire = (50 * 1024 * 1024i32).to_be_bytes().to_vec();
            wire.extend_from_slice(&[7; 4]);
            let mut r = FrameReader::with_ahead(
                SliceReader {
                    data: wire,
                    pos: 0,
                    step: 1 << 20,
                },
                100 * 1024 * 1024,
                ahead,
            );
            assert!(r.next().await.is_err());
            assert!(r.buf.capacity() <= step + READ_CHUNK, "{ahead:?}");
        }
    }

    #[tokio::test]
    async fn a_frame_buffer_grows_with_the_bytes_received() {
        // 90 MiB announced, 20 MiB sent before the peer stops: the buffer
        // holds about what arrived, not what was announced.
        let sent = 20 * 1024 * 1024;
        for (ahead, step) in [(Ahead::Client, AHEAD), (Ahead::Broker, BROKER_AHEAD)] {
            let mut wire = (90 * 1024 * 1024i32).to_be_bytes().to_vec();
            wire.resize(LENGTH_PREFIX + sent, 3);
            let mut r = FrameReader::with_ahead(
                SliceReader {
                    data: wire,
                    pos: 0,
                    step: 256 * 1024,
                },
                100 * 1024 * 1024,
                ahead,
            );
            assert!(r.next().await.is_err());
            assert_eq!(r.buf.len(), LENGTH_PREFIX + sent);
            // Reserving at most max(step, arrived) ahead, and BytesMut
            // rounding a reservation up to twice its capacity, keep the
            // buffer within four times what arrived plus two steps.
            assert!(
                r.buf.capacity() <= 4 * r.buf.len() + 2 * step,
                "{ahead:?}: capacity {} for {} bytes",
                r.buf.capacity(),
                r.buf.len()
            );
        }
    }

    /// A reader over bytes that hands out at most `step` per read and never
    /// more than the buffer has room for.
    struct SliceReader {
        data: Vec<u8>,
        pos: usize,
        step: usize,
    }

    impl AsyncRead for SliceReader {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let n = (self.data.len() - self.pos)
                .min(self.step)
                .min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.data[start..start + n]);
            self.pos += n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn vectored_writes_survive_short_writes() {
        let frames: Vec<Bytes> = (0u8..100)
            .map(|i| Bytes::from(vec![i; 1 + usize::from(i) * 7]))
            .collect();
        let expected: Vec<u8> = frames.iter().flat_map(|b| b.to_vec()).collect();
        let mut w = ShortWriter {
            out: Vec::new(),
            max: 13,
        };
        let mut bufs = frames.clone();
        write_all_vectored(&mut w, &mut bufs).await.unwrap();
        assert!(bufs.is_empty());
        assert_eq!(w.out, expected);
    }

    /// A writer that takes at most `max` bytes per (vectored) write.
    struct ShortWriter {
        out: Vec<u8>,
        max: usize,
    }

    impl AsyncWrite for ShortWriter {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.max);
            self.out.extend_from_slice(&buf[..n]);
            std::task::Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let mut left = self.max;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(left);
                self.out.extend_from_slice(&b[..take]);
                n += take;
                left -= take;
                if left == 0 {
                    break;
                }
            }
            std::task::Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
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
