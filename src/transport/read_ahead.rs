//! Read-ahead for the small reads of the WebSocket layer. tungstenite reads a
//! connection through its own buffer, at most `read_buffer_size` bytes per read
//! (512 for `/ws`, 16 for `/mimc`: the buffer is kept for the connection's life, so
//! it is small for idle connections). A busy connection would then pay one system
//! call per few hundred bytes, or on `/mimc` per 16. [`ReadAhead`] turns a small read
//! into one read of up to
//! [`READ_AHEAD_BYTES`] from the socket and keeps what the reader did not take for
//! its next reads, which cost a copy instead of a system call.
//!
//! Bounded: at most [`READ_AHEAD_BYTES`] wait here per connection, and only while a
//! reader is taking them (an idle connection holds nothing: the bytes live in an
//! allocation of their own, freed once taken). Reads of a larger buffer (hyper's
//! HTTP reads, TLS records) go to the socket directly.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// The most read from the socket at once for a small read.
pub const READ_AHEAD_BYTES: usize = 4096;

/// Bytes read from the socket that the reader has not taken yet: one pointer in
/// every connection (its socket object stays in its allocation size class).
#[derive(Debug, Default)]
pub struct ReadAhead {
    spill: Option<Box<Spill>>,
}

#[derive(Debug)]
struct Spill {
    bytes: Box<[u8]>,
    taken: usize,
}

impl ReadAhead {
    /// Reads into `buf` from what is waiting here, or else from `inner`: a read of
    /// up to [`READ_AHEAD_BYTES`] whose rest waits here.
    pub fn poll_read<R: AsyncRead + Unpin>(
        &mut self,
        inner: &mut R,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if let Some(spill) = self.spill.as_deref_mut() {
            let rest = &spill.bytes[spill.taken..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            spill.taken += n;
            if spill.taken >= spill.bytes.len() {
                self.spill = None;
            }
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= READ_AHEAD_BYTES {
            return Pin::new(inner).poll_read(cx, buf);
        }
        let mut scratch = [MaybeUninit::<u8>::uninit(); READ_AHEAD_BYTES];
        let mut ahead = ReadBuf::uninit(&mut scratch);
        ready!(Pin::new(inner).poll_read(cx, &mut ahead))?;
        let read = ahead.filled();
        let n = read.len().min(buf.remaining());
        buf.put_slice(&read[..n]);
        if n < read.len() {
            self.spill = Some(Box::new(Spill {
                bytes: read[n..].into(),
                taken: 0,
            }));
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out `data` in reads of at most `chunk` bytes, counting the reads.
    struct Chunks {
        data: Vec<u8>,
        at: usize,
        chunk: usize,
        reads: usize,
    }

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.reads += 1;
            let n = (self.data.len() - self.at)
                .min(buf.remaining())
                .min(self.chunk);
            let at = self.at;
            buf.put_slice(&self.data[at..at + n]);
            self.at += n;
            Poll::Ready(Ok(()))
        }
    }

    fn read_all(ahead: &mut ReadAhead, inner: &mut Chunks, size: usize) -> Vec<u8> {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut out = Vec::new();
        loop {
            let mut space = vec![0u8; size];
            let mut buf = ReadBuf::new(&mut space);
            match ahead.poll_read(inner, &mut cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return out,
                Poll::Ready(Ok(())) => out.extend_from_slice(buf.filled()),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_connection_carries_one_pointer() {
        assert_eq!(
            std::mem::size_of::<ReadAhead>(),
            std::mem::size_of::<usize>()
        );
    }

    #[test]
    fn small_reads_take_the_socket_in_large_ones_and_nothing_is_lost() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let mut inner = Chunks {
            data: data.clone(),
            at: 0,
            chunk: usize::MAX,
            reads: 0,
        };
        let mut ahead = ReadAhead::default();
        assert_eq!(read_all(&mut ahead, &mut inner, 256), data);
        // 10,000 bytes in reads of 4 KiB, and the read that saw the end.
        assert_eq!(inner.reads, 4);
        assert!(ahead.spill.is_none(), "nothing is kept once taken");

        // A socket that hands out less than asked: still in order, still whole.
        let mut inner = Chunks {
            data: data.clone(),
            at: 0,
            chunk: 300,
            reads: 0,
        };
        assert_eq!(read_all(&mut ahead, &mut inner, 256), data);

        // A large read goes to the socket as it is.
        let mut inner = Chunks {
            data: data.clone(),
            at: 0,
            chunk: usize::MAX,
            reads: 0,
        };
        assert_eq!(read_all(&mut ahead, &mut inner, 8192), data);
        assert_eq!(inner.reads, 3);
    }
}
