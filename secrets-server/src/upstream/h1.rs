//! HTTP/1.1 on the wire to the upstream (RFC 9112): the request head as the
//! proxy writes it, the answer head as it reads it, and the answer body's
//! framing. Strict wherever two readers could disagree about where a
//! message ends: a malformed answer, one framed two ways or one with bytes
//! after its end is an error or ends its connection, never a guess.

use bytes::{Buf as _, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};

/// The longest answer head read: status line and headers.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// The most headers an answer may have.
const MAX_HEADERS: usize = 100;
/// The longest chunk-size line.
const MAX_LINE: usize = 4096;
/// The longest trailer section (read, then dropped).
const MAX_TRAILERS: usize = 16 * 1024;
/// Data frames up to this length are copied out of the read buffer, which
/// stays whole for the next read; longer ones are handed out in place.
const COPIED: usize = 4096;

/// How a request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// No body and no header saying so (a GET, HEAD, DELETE or OPTIONS
    /// without one).
    Nothing,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked` (a streamed body of unknown length).
    Chunked,
}

impl Sent {
    /// The framing of a body of `length` bytes (`None`: unknown) for `method`.
    pub(crate) fn of(method: &Method, length: Option<u64>) -> Self {
        match length {
            Some(0)
                if matches!(
                    *method,
                    Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS
                ) =>
            {
                Self::Nothing
            }
            Some(n) => Self::Length(n),
            None => Self::Chunked,
        }
    }
}

/// The request head: `target` (origin-form), `host`, the framing header of
/// `sent`, and `headers` except those this writer owns (`Host`, framing,
/// `Expect`, `Connection`). Every part is a checked `http` type, so no CR,
/// LF or NUL can reach the wire.
pub(crate) fn request_head(
    method: &Method,
    target: &str,
    host: &HeaderValue,
    headers: &HeaderMap,
    sent: Sent,
) -> Vec<u8> {
    let mut head = Vec::with_capacity(128 + target.len() + headers.len() * 64);
    head.extend_from_slice(method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    head.extend_from_slice(host.as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if matches!(
            *name,
            header::HOST
                | header::CONTENT_LENGTH
                | header::TRANSFER_ENCODING
                | header::EXPECT
                | header::CONNECTION
        ) {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    match sent {
        Sent::Nothing => {}
        Sent::Length(n) => {
            head.extend_from_slice(b"content-length: ");
            head.extend_from_slice(n.to_string().as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        Sent::Chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// How an answer's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    /// After this many bytes.
    Length(u64),
    /// At its last chunk.
    Chunked,
    /// When the upstream closes the connection.
    Close,
}

/// A final answer's head.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) framing: Framing,
    /// Whether the connection may carry another request after this answer.
    pub(crate) reusable: bool,
}

/// What the start of a read buffer holds.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// An interim (1xx) answer of this many bytes, to be skipped.
    Interim(usize),
    /// A final answer's head of this many bytes.
    Final(usize, Head),
}

/// Reads the answer head at the start of `buf`, for a request of `method`.
pub(crate) fn parse_answer(buf: &[u8], method: &Method) -> Result<Parsed, &'static str> {
    // Left uninitialised: the parser writes only those it fills.
    let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut answer = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut answer,
        buf,
        &mut slots,
    );
    let length = match parsed {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err("an answer head longer than 64 KiB");
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err("an answer with over 100 headers"),
        Err(_) => return Err("a malformed answer head"),
    };
    if length > MAX_HEAD {
        return Err("an answer head longer than 64 KiB");
    }
    let status = answer
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or("a malformed answer status")?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err("a protocol switch it never asked for");
    }
    if status.is_informational() {
        return Ok(Parsed::Interim(length));
    }
    // One copy of the head; the values are slices of it.
    let copied = Bytes::copy_from_slice(&buf[..length]);
    let mut headers = HeaderMap::with_capacity(answer.headers.len());
    // Which of the headers that frame the answer it holds: only those are
    // looked up again.
    let (mut connection, mut transfer_encoding, mut content_length_held) = (false, false, false);
    for field in answer.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| "a malformed answer header name")?;
        connection |= name == header::CONNECTION;
        transfer_encoding |= name == header::TRANSFER_ENCODING;
        content_length_held |= name == header::CONTENT_LENGTH;
        // The parser's values lie within `buf`.
        let start = (field.value.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
        let value = copied
            .get(start..start.saturating_add(field.value.len()))
            .filter(|slice| *slice == field.value)
            .map(|_| copied.slice(start..start + field.value.len()))
            .ok_or("a malformed answer header value")?;
        let value =
            HeaderValue::from_maybe_shared(value).map_err(|_| "a malformed answer header value")?;
        headers.append(name, value);
    }
    let closes = connection
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|value| value.as_bytes().split(|&b| b == b','))
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"));
    let mut reusable = answer.version == Some(1) && !closes;
    let framing = if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        // No body follows, but a Content-Length still goes to the client:
        // as one value, or not at all.
        if content_length_held {
            match content_length(&headers) {
                Some((_, true)) => {}
                Some((length, false)) => {
                    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
                }
                None => {
                    headers.remove(header::CONTENT_LENGTH);
                }
            }
        }
        Framing::Empty
    } else if transfer_encoding {
        // Framed two ways (or by a coding this reader cannot end): the
        // connection is not trusted with another request.
        if content_length_held {
            reusable = false;
        }
        let last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|value| value.as_bytes().split(|&b| b == b','))
            .next_back()
            .map(<[u8]>::trim_ascii);
        if last.is_some_and(|coding| coding.eq_ignore_ascii_case(b"chunked")) {
            Framing::Chunked
        } else {
            reusable = false;
            Framing::Close
        }
    } else if content_length_held {
        let (length, single) = content_length(&headers).ok_or("an invalid Content-Length")?;
        // Agreeing values (`3, 3`) pass on as the one value they agree on.
        if !single {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        Framing::Length(length)
    } else {
        reusable = false;
        Framing::Close
    };
    Ok(Parsed::Final(
        length,
        Head {
            status,
            headers,
            framing,
            reusable,
        },
    ))
}

/// The one length all `Content-Length` values (and list members) agree
/// on, and whether it was written once only.
fn content_length(headers: &HeaderMap) -> Option<(u64, bool)> {
    let mut agreed = None;
    let mut members = 0;
    for member in headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
    {
        let digits = member.trim_ascii();
        if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        // At most 19 digits: below `u64::MAX`.
        let length = digits
            .iter()
            .fold(0u64, |length, digit| length * 10 + u64::from(digit - b'0'));
        if agreed.is_some_and(|a| a != length) {
            return None;
        }
        agreed = Some(length);
        members += 1;
    }
    agreed.map(|length| (length, members == 1))
}

/// The first `n` bytes of `buf`, taken out of it.
pub(crate) fn take(buf: &mut BytesMut, n: usize) -> Bytes {
    if n <= COPIED {
        let data = Bytes::copy_from_slice(&buf[..n]);
        buf.advance(n);
        data
    } else {
        buf.split_to(n).freeze()
    }
}

/// What a chunked body's next step is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Data to pass on.
    Data(Bytes),
    /// More bytes must be read first.
    More,
    /// The last chunk and the trailers (dropped) have been read.
    End,
}

/// A chunked body's decoder (RFC 9112, section 7.1).
#[derive(Debug, Default)]
pub(crate) struct Chunked {
    state: ChunkState,
    trailers: usize,
}

#[derive(Debug, Default, Clone, Copy)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

impl Chunked {
    /// Decodes from the start of `buf`, taking what it has read.
    pub(crate) fn step(&mut self, buf: &mut BytesMut) -> Result<Step, &'static str> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some(end) = line_end(buf, MAX_LINE)? else {
                        return Ok(Step::More);
                    };
                    let size = chunk_size(&buf[..end]).ok_or("a malformed chunk size")?;
                    buf.advance(end + 2);
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let rest = left - n as u64;
                    self.state = if rest == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(rest)
                    };
                    return Ok(Step::Data(take(buf, n)));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err("a chunk longer than its size");
                    }
                    buf.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let room = MAX_TRAILERS.saturating_sub(self.trailers);
                    let Some(end) = line_end(buf, room)? else {
                        return Ok(Step::More);
                    };
                    buf.advance(end + 2);
                    self.trailers += end + 2;
                    if end == 0 {
                        self.state = ChunkState::Done;
                    }
                }
                ChunkState::Done => return Ok(Step::End),
            }
        }
    }
}

/// Where the line at the start of `buf` ends (its CRLF), if it has ended;
/// an error once it is longer than `max` or holds a bare CR or LF.
fn line_end(buf: &[u8], max: usize) -> Result<Option<usize>, &'static str> {
    let window = &buf[..buf.len().min(max.saturating_add(2))];
    match window.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(at) if window[at] == b'\r' => match window.get(at + 1) {
            Some(b'\n') => Ok(Some(at)),
            Some(_) => Err("a chunk line with a bare CR"),
            None if at >= max => Err("a chunk line too long"),
            None => Ok(None),
        },
        Some(_) => Err("a chunk line with a bare LF"),
        None if window.len() > max => Err("a chunk line too long"),
        None => Ok(None),
    }
}

/// The size of a chunk-size line (hex digits, then optional whitespace and
/// extensions, which are dropped).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return None;
    }
    let rest = line[digits..].trim_ascii_start();
    if !(rest.is_empty() || rest.starts_with(b";"))
        || rest.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(&line[..digits]).ok()?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str, method: &Method) -> Result<Head, &'static str> {
        match parse_answer(text.as_bytes(), method)? {
            Parsed::Final(length, head) => {
                assert_eq!(length, text.len());
                Ok(head)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_request_head_owns_host_and_framing() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("evil.example"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        headers.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        headers.insert("x-kept", HeaderValue::from_static("yes"));
        let host = HeaderValue::from_static("mlflow:5000");
        let text = request_head(&Method::POST, "/api/x?a=b", &host, &headers, Sent::Chunked);
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "POST /api/x?a=b HTTP/1.1\r\nhost: mlflow:5000\r\nx-kept: yes\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let text = request_head(
            &Method::GET,
            "/",
            &host,
            &HeaderMap::new(),
            Sent::of(&Method::GET, Some(0)),
        );
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "GET / HTTP/1.1\r\nhost: mlflow:5000\r\n\r\n"
        );
        assert_eq!(Sent::of(&Method::POST, Some(0)), Sent::Length(0));
        assert_eq!(Sent::of(&Method::PUT, None), Sent::Chunked);
    }

    #[test]
    fn answers_are_framed_as_rfc_9112_says() {
        let get = Method::GET;
        let cases = [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n",
                Framing::Length(12),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n",
                Framing::Length(3),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                Framing::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
                Framing::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n",
                Framing::Chunked,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
                Framing::Close,
                false,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", Framing::Close, false),
            (
                "HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n",
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n",
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n",
                Framing::Length(1),
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nconnection: keep-alive, Close\r\ncontent-length: 1\r\n\r\n",
                Framing::Length(1),
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 9999999999999999999\r\n\r\n",
                Framing::Length(9_999_999_999_999_999_999),
                true,
            ),
        ];
        for (text, framing, reusable) in cases {
            let parsed = head(text, &get).unwrap();
            assert_eq!(
                (parsed.framing, parsed.reusable),
                (framing, reusable),
                "{text}"
            );
            if let Framing::Length(n) = framing {
                let lengths: Vec<_> = parsed
                    .headers
                    .get_all(header::CONTENT_LENGTH)
                    .iter()
                    .collect();
                assert_eq!(lengths, [&HeaderValue::from(n)], "{text}");
            }
        }
        // Leading zeros read as decimal; the one value passes on as written.
        let parsed = head("HTTP/1.1 200 OK\r\ncontent-length: 007\r\n\r\n", &get).unwrap();
        assert_eq!(parsed.framing, Framing::Length(7));
        let parsed = head(
            "HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n",
            &Method::HEAD,
        )
        .unwrap();
        assert_eq!(parsed.framing, Framing::Empty);
        for (text, length) in [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 18, 18\r\n\r\n",
                Some("18"),
            ),
            ("HTTP/1.1 200 OK\r\ncontent-length: 18, 19\r\n\r\n", None),
            ("HTTP/1.1 200 OK\r\ncontent-length: abc\r\n\r\n", None),
        ] {
            let parsed = head(text, &Method::HEAD).unwrap();
            let sent = parsed
                .headers
                .get(header::CONTENT_LENGTH)
                .map(|v| v.to_str().unwrap());
            assert_eq!((parsed.framing, sent), (Framing::Empty, length), "{text}");
        }
        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: 3, 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +3\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 0x3\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad header: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx: a\r\n b\r\n\r\n",
            "HTTP/1.1 20 OK\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
        ] {
            assert!(parse_answer(bad.as_bytes(), &get).is_err(), "{bad:?}");
        }
        assert!(matches!(
            parse_answer(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200", &get),
            Ok(Parsed::Interim(25))
        ));
        assert!(matches!(
            parse_answer(b"HTTP/1.1 200 OK\r\ncontent-le", &get),
            Ok(Parsed::Partial)
        ));
        let long = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD));
        assert!(parse_answer(long.as_bytes(), &get).is_err());
    }

    fn decoded(wire: &[u8], pieces: usize) -> Result<Vec<u8>, &'static str> {
        let mut decoder = Chunked::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let step = wire.len().div_ceil(pieces.max(1)).max(1);
        let mut fed = wire.chunks(step);
        loop {
            match decoder.step(&mut buf)? {
                Step::Data(data) => out.extend_from_slice(&data),
                Step::End => {
                    return if buf.is_empty() {
                        Ok(out)
                    } else {
                        Err("bytes after the end")
                    };
                }
                Step::More => match fed.next() {
                    Some(piece) => buf.extend_from_slice(piece),
                    None => return Err("ended early"),
                },
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_in_any_pieces_and_bad_ones_fail() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\ntrailer: x\r\n\r\n";
        for pieces in 1..=wire.len() {
            assert_eq!(decoded(wire, pieces).unwrap(), b"hello, world", "{pieces}");
        }
        assert_eq!(
            decoded(b"A \r\n0123456789\r\n0\r\n\r\n", 1).unwrap(),
            b"0123456789"
        );
        for bad in [
            &b"5\r\nhello!\r\n0\r\n\r\n"[..],
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"x\r\n",
            b"\r\n",
            b"-1\r\n",
            b"11111111111111111\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"5;a\rb\r\nhello\r\n0\r\n\r\n",
            b"0\r\nx\ry\r\n\r\n",
        ] {
            assert!(
                decoded(bad, 1).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("1;{}\r\n", "e".repeat(MAX_LINE));
        assert!(decoded(long.as_bytes(), 1).is_err());
        let trailers = format!("0\r\n{}\r\n\r\n", "t: x\r\n".repeat(MAX_TRAILERS / 6 + 1));
        assert!(decoded(trailers.as_bytes(), 3).is_err());
    }
}
