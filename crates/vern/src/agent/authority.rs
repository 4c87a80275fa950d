//! A relay in front of the gRPC server that replaces the HTTP/2
//! `:authority` of every request with `localhost`.
//!
//! gRPC's C core (the Python, Ruby and C++ clients, and so the `spiffe`
//! Python package) sends the percent-encoded socket path as the authority
//! of a Unix socket connection (`tmp%2Fagent.sock`), which is not a valid
//! authority, and the HTTP/2 server under tonic (`h2`) resets every such
//! stream with `PROTOCOL_ERROR` (grpc/grpc#38142, hyperium/h2#487). A
//! Unix socket has no authority to speak of, so the relay decodes each
//! client header block (HPACK, with `loona-hpack`), sets `:authority` to
//! `localhost` as grpc-go and Kubernetes do, and re-encodes it; every other
//! frame passes unchanged, and the server's direction is copied as is.
//! The peer's credentials are taken from the socket before it is relayed,
//! so attestation still sees the real process.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{
    AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, DuplexStream, ReadBuf,
};
use tokio::net::unix::UCred;
use tokio::net::UnixStream;
use tonic::transport::server::Connected;

/// The HTTP/2 client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame payload the relay reads and writes: HTTP/2's initial
/// `SETTINGS_MAX_FRAME_SIZE`, which neither side raises here.
const MAX_FRAME: usize = 16_384;
/// The largest header block accepted from a client.
const MAX_BLOCK: usize = 64 * 1024;
/// Buffer between the relay and the server.
const PIPE: usize = 64 * 1024;

/// The socket peer's credentials, as the request extensions carry them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerCred(pub(crate) Option<UCred>);

/// A relayed connection, as the gRPC server sees it.
pub(crate) struct Relayed {
    io: DuplexStream,
    cred: Option<UCred>,
}

impl Connected for Relayed {
    type ConnectInfo = PeerCred;

    fn connect_info(&self) -> PeerCred {
        PeerCred(self.cred)
    }
}

impl AsyncRead for Relayed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Relayed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Relays an accepted connection; the returned end goes to the server.
pub(crate) fn relay(stream: UnixStream) -> Relayed {
    let cred = stream.peer_cred().ok();
    let (ours, theirs) = tokio::io::duplex(PIPE);
    let (mut from_client, mut to_client) = stream.into_split();
    let (mut from_server, mut to_server) = tokio::io::split(theirs);
    tokio::spawn(async move {
        if let Err(e) = rewrite(&mut from_client, &mut to_server).await {
            tracing::debug!(error = %e, "A Workload API connection ended.");
        }
        let _ = to_server.shutdown().await;
    });
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
        let _ = to_client.shutdown().await;
    });
    Relayed { io: ours, cred }
}

/// Copies the client's frames to the server, re-encoding header blocks
/// with `:authority: localhost`.
async fn rewrite<R, W>(from: &mut R, to: &mut W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; PREFACE.len()];
    from.read_exact(&mut preface).await?;
    to.write_all(&preface).await?;
    if preface != PREFACE {
        // Not HTTP/2 with prior knowledge: the server refuses it.
        return Ok(());
    }
    let mut decoder = loona_hpack::Decoder::new();
    let mut encoder = loona_hpack::Encoder::new();
    loop {
        let Some((kind, flags, stream, payload)) = read_frame(from).await? else {
            return Ok(());
        };
        if kind != HEADERS {
            write_frame(to, kind, flags, stream, &payload).await?;
            continue;
        }
        let (priority, mut block) = headers_fragment(flags, &payload)?;
        let mut end = flags & END_HEADERS != 0;
        while !end {
            let Some((k, f, s, more)) = read_frame(from).await? else {
                return Ok(());
            };
            if k != CONTINUATION || s != stream || block.len() + more.len() > MAX_BLOCK {
                return Err(invalid("a header block is malformed or too large"));
            }
            block.extend_from_slice(&more);
            end = f & END_HEADERS != 0;
        }
        let headers = decoder
            .decode(&block)
            .map_err(|e| invalid(&format!("a header block does not decode: {e:?}")))?;
        let fields = headers.iter().map(|(name, value)| {
            if name.as_slice() == b":authority" {
                (name.as_slice(), b"localhost".as_slice())
            } else {
                (name.as_slice(), value.as_slice())
            }
        });
        let encoded = encoder.encode(fields);
        write_headers(to, flags & END_STREAM, stream, priority, &encoded).await?;
    }
}

type Frame = (u8, u8, u32, Vec<u8>);

async fn read_frame<R: AsyncRead + Unpin>(from: &mut R) -> std::io::Result<Option<Frame>> {
    let mut head = [0u8; 9];
    match from.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let [l0, l1, l2, kind, flags, s0, s1, s2, s3] = head;
    let len = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
    if len > MAX_FRAME {
        return Err(invalid("a frame is larger than the maximum frame size"));
    }
    let stream = u32::from_be_bytes([s0, s1, s2, s3]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    from.read_exact(&mut payload).await?;
    Ok(Some((kind, flags, stream, payload)))
}

/// A HEADERS frame's priority bytes (when flagged) and its header block
/// fragment, without padding.
fn headers_fragment(flags: u8, payload: &[u8]) -> std::io::Result<(Option<[u8; 5]>, Vec<u8>)> {
    let bad = || invalid("a HEADERS frame is malformed");
    let mut rest = payload;
    let mut pad = 0usize;
    if flags & PADDED != 0 {
        let (first, tail) = rest.split_first().ok_or_else(bad)?;
        pad = usize::from(*first);
        rest = tail;
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        let bytes: [u8; 5] = rest
            .get(..5)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?;
        priority = Some(bytes);
        rest = rest.get(5..).ok_or_else(bad)?;
    }
    let fragment = rest
        .get(..rest.len().checked_sub(pad).ok_or_else(bad)?)
        .ok_or_else(bad)?;
    Ok((priority, fragment.to_vec()))
}

async fn write_frame<W: AsyncWrite + Unpin>(
    to: &mut W,
    kind: u8,
    flags: u8,
    stream: u32,
    payload: &[u8],
) -> std::io::Result<()> {
    let [_, l0, l1, l2] = u32::try_from(payload.len())
        .map_err(|_| invalid("a frame is too large"))?
        .to_be_bytes();
    let [s0, s1, s2, s3] = stream.to_be_bytes();
    to.write_all(&[l0, l1, l2, kind, flags, s0, s1, s2, s3])
        .await?;
    to.write_all(payload).await
}

/// Writes a header block as one HEADERS frame and as many CONTINUATION
/// frames as the maximum frame size needs.
async fn write_headers<W: AsyncWrite + Unpin>(
    to: &mut W,
    end_stream: u8,
    stream: u32,
    priority: Option<[u8; 5]>,
    block: &[u8],
) -> std::io::Result<()> {
    let mut first = Vec::with_capacity(MAX_FRAME);
    let mut flags = end_stream;
    if let Some(p) = priority {
        first.extend_from_slice(&p);
        flags |= PRIORITY;
    }
    let room = MAX_FRAME - first.len();
    let (head, mut rest) = block.split_at(block.len().min(room));
    first.extend_from_slice(head);
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    write_frame(to, HEADERS, flags, stream, &first).await?;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME));
        rest = tail;
        let f = if rest.is_empty() { END_HEADERS } else { 0 };
        write_frame(to, CONTINUATION, f, stream, chunk).await?;
    }
    to.flush().await
}

fn invalid(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn through(input: Vec<u8>) -> Vec<u8> {
        let mut out = Vec::new();
        rewrite(&mut input.as_slice(), &mut out).await.unwrap();
        out
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let [_, l0, l1, l2] = u32::try_from(len).unwrap().to_be_bytes();
        let mut v = vec![l0, l1, l2, kind, flags];
        v.extend_from_slice(&stream.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[tokio::test]
    async fn the_authority_becomes_localhost_and_the_rest_passes() {
        let mut enc = loona_hpack::Encoder::new();
        let block = enc.encode([
            (b":method".as_slice(), b"POST".as_slice()),
            (b":authority", b"tmp%2Fagent.sock"),
            (b":path", b"/SpiffeWorkloadAPI/FetchX509SVID"),
            (b"workload.spiffe.io", b"true"),
        ]);
        let (a, b) = block.split_at(5);
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[]));
        // Padded, with priority, split over a CONTINUATION frame.
        let mut first = vec![2u8, 0, 0, 0, 0, 16];
        first.extend_from_slice(a);
        first.extend_from_slice(&[0, 0]);
        input.extend(frame(HEADERS, PADDED | PRIORITY, 1, &first));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, b));
        input.extend(frame(0x0, END_STREAM, 1, b"data"));
        let out = through(input).await;
        assert!(out.starts_with(PREFACE));
        let mut rest = out.get(PREFACE.len()..).unwrap();
        let (settings, tail) = rest.split_at(9);
        assert_eq!(settings[3], 0x4);
        rest = tail;
        let len = usize::from(rest[2]);
        assert_eq!(rest[3], HEADERS);
        assert_eq!(rest[4], END_HEADERS | PRIORITY);
        let payload = &rest[9..9 + len];
        let headers = loona_hpack::Decoder::new().decode(&payload[5..]).unwrap();
        let authority = headers.iter().find(|(n, _)| n == b":authority").unwrap();
        assert_eq!(authority.1, b"localhost");
        assert!(headers
            .iter()
            .any(|(n, v)| n == b"workload.spiffe.io" && v == b"true"));
        let data = &rest[9 + len..];
        assert_eq!(data, frame(0x0, END_STREAM, 1, b"data").as_slice());
    }

    #[tokio::test]
    async fn malformed_frames_end_the_connection() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, PADDED, 1, &[9, 1]));
        let mut out = Vec::new();
        assert!(rewrite(&mut input.as_slice(), &mut out).await.is_err());
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, 0, 1, &[0x80]));
        input.extend(frame(0x0, 0, 1, b"x"));
        let mut out = Vec::new();
        assert!(rewrite(&mut input.as_slice(), &mut out).await.is_err());
    }
}
