//! The HTTP/1 the loopback listener speaks: a request head read with a bound (RFC 9112 §2.2,
//! §3), its request line in origin form, its `Host` (the listener's own address, or the
//! request is not for it), and the fixed answers, none of which echoes anything from the
//! request.

use tokio::io::{AsyncRead, AsyncReadExt as _};

/// A request head longer than this is refused (431): the redirect's is far shorter.
const MAX_REQUEST_HEAD: usize = 8 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub(super) enum HeadError {
    /// The connection ended before the head did.
    Closed,
    /// More than [`MAX_REQUEST_HEAD`] bytes without the end of the head.
    TooLarge,
}

/// Reads an HTTP/1 request head (up to the empty line), at most [`MAX_REQUEST_HEAD`] bytes.
pub(super) async fn read_head(reader: &mut (impl AsyncRead + Unpin)) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let read = reader
            .read(&mut chunk)
            .await
            .map_err(|_| HeadError::Closed)?;
        if read == 0 {
            return Err(HeadError::Closed);
        }
        let searched = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..read]);
        if let Some(end) = find_head_end(&head[searched..]) {
            head.truncate(searched + end);
            return Ok(head);
        }
        if head.len() > MAX_REQUEST_HEAD {
            return Err(HeadError::TooLarge);
        }
    }
}

/// Where the head ends: after `\r\n\r\n` (or a bare `\n\n`, which RFC 9112 §2.2 lets a server
/// accept).
pub(super) fn find_head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The method and request target of an HTTP/1.x request line (RFC 9112 §3): three parts
/// separated by single spaces, the target in origin form (a leading `/`; absolute, authority
/// and asterisk forms are refused) of visible ASCII without a fragment.
pub(super) fn parse_request_line(head: &[u8]) -> Option<(&str, &str)> {
    let end = head.iter().position(|&b| b == b'\n')?;
    let line = head[..end].strip_suffix(b"\r").unwrap_or(&head[..end]);
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_alphabetic())
        || !matches!(version, "HTTP/1.1" | "HTTP/1.0")
        || !target.starts_with('/')
        || target.starts_with("//")
        || !target.bytes().all(|b| b.is_ascii_graphic() && b != b'#')
    {
        return None;
    }
    Some((method, target))
}

/// Whether the head's `Host` names the listener on 127.0.0.1 `port`, or why not (RFC 9112
/// §3.2). A browser sends the host and port of the URL it requests: a page on another name
/// that was rebound to 127.0.0.1 (DNS rebinding) sends that name, and is not the redirect. A
/// host is compared without regard to case (RFC 3986 §3.2.2); the port may be left out only
/// where it is 80 (RFC 9110 §7.2).
pub(super) fn host_check(head: &[u8], port: u16) -> Result<(), Answer> {
    let text = std::str::from_utf8(head).map_err(|_| Answer::BadRequest)?;
    let mut hosts = text
        .split('\n')
        .skip(1)
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| name.eq_ignore_ascii_case("host"))
        .map(|(_, value)| value.trim_matches([' ', '\t']));
    // RFC 9112 §3.2: a request without a Host, or with more than one, is a bad request.
    let (Some(host), None) = (hosts.next(), hosts.next()) else {
        return Err(Answer::BadRequest);
    };
    let (name, given_port) = match host.rsplit_once(':') {
        Some((name, given)) => (name, given.parse::<u16>().ok()),
        None => (host, Some(80)),
    };
    let ours = matches!(given_port, Some(p) if p == port)
        && (name == "127.0.0.1" || name.eq_ignore_ascii_case("localhost"));
    if ours {
        Ok(())
    } else {
        Err(Answer::Misdirected)
    }
}

/// The path of an origin-form target: everything before the `?`.
pub(super) fn target_path(target: &str) -> &str {
    target.split_once('?').map_or(target, |(path, _)| path)
}

/// The listener's answers. None of them echoes anything from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    Received,
    NotFound,
    /// The redirect path, without the `state` of the authorization in progress.
    OtherAuthorization,
    BadRequest,
    /// A `Host` other than the listener's own address (RFC 9110 §15.5.20).
    Misdirected,
    Timeout,
    TooLarge,
}

impl Answer {
    pub(super) fn status(self) -> u16 {
        match self {
            Self::Received => 200,
            Self::NotFound => 404,
            Self::OtherAuthorization => 400,
            Self::BadRequest => 400,
            Self::Misdirected => 421,
            Self::Timeout => 408,
            Self::TooLarge => 431,
        }
    }

    pub(super) fn response(self) -> Vec<u8> {
        let (reason, content_type, body) = match self {
            Self::Received => ("OK", "text/html; charset=utf-8", RECEIVED_PAGE),
            Self::NotFound => ("Not Found", "text/plain; charset=utf-8", "Not found\n"),
            Self::OtherAuthorization => (
                "Bad Request",
                "text/plain; charset=utf-8",
                "This is not the redirect of the authorization in progress.\n",
            ),
            Self::BadRequest => ("Bad Request", "text/plain; charset=utf-8", "Bad request\n"),
            Self::Misdirected => (
                "Misdirected Request",
                "text/plain; charset=utf-8",
                "This request is not addressed to this listener.\n",
            ),
            Self::Timeout => (
                "Request Timeout",
                "text/plain; charset=utf-8",
                "Request timeout\n",
            ),
            Self::TooLarge => (
                "Request Header Fields Too Large",
                "text/plain; charset=utf-8",
                "Request header fields too large\n",
            ),
        };
        // no-store and no-referrer: the page's URL carries the code.
        format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n\r\n{body}",
            self.status(),
            body.len()
        )
        .into_bytes()
    }
}

pub(super) const RECEIVED_PAGE: &str = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Authorization received</title></head>\n<body><p>The authorization reached the application. You can close this window.</p></body></html>\n";

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    #[test]
    fn request_lines_in_origin_form_only() {
        /// A request head, and the method and target it yields.
        type Case = (&'static [u8], Option<(&'static str, &'static str)>);
        let cases: &[Case] = &[
            (
                b"GET /callback?code=a&state=b HTTP/1.1\r\nHost: x\r\n\r\n",
                Some(("GET", "/callback?code=a&state=b")),
            ),
            (b"GET / HTTP/1.0\n\n", Some(("GET", "/"))),
            (
                b"POST /callback HTTP/1.1\r\n\r\n",
                Some(("POST", "/callback")),
            ),
            // Absolute, authority and asterisk forms.
            (b"GET http://127.0.0.1:1/callback HTTP/1.1\r\n\r\n", None),
            (b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n", None),
            (b"OPTIONS * HTTP/1.1\r\n\r\n", None),
            (b"GET //evil.example/callback HTTP/1.1\r\n\r\n", None),
            // Malformed lines.
            (b"GET  /callback HTTP/1.1\r\n\r\n", None),
            (b"GET /callback HTTP/1.1 extra\r\n\r\n", None),
            (b"GET /callback\r\n\r\n", None),
            (b"GET /callback HTTP/2.0\r\n\r\n", None),
            (b"GET /call\tback HTTP/1.1\r\n\r\n", None),
            (b"GET /callback#frag HTTP/1.1\r\n\r\n", None),
            (b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n", None),
            (b"G-T /callback HTTP/1.1\r\n\r\n", None),
            (b"GET /callback HTTP/1.1", None),
        ];
        for (head, expected) in cases {
            assert_eq!(
                parse_request_line(head),
                *expected,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
        assert_eq!(target_path("/callback?code=a"), "/callback");
        assert_eq!(target_path("/callback"), "/callback");
    }

    #[tokio::test]
    async fn a_request_head_is_read_to_its_end_and_no_further_than_8_kib() {
        let mut input: &[u8] = b"GET /cb HTTP/1.1\r\nHost: a\r\n\r\nbody";
        assert_eq!(
            read_head(&mut input).await.unwrap(),
            b"GET /cb HTTP/1.1\r\nHost: a\r\n\r\n"
        );
        let long = vec![b'a'; 100 * 1024];
        assert_eq!(
            read_head(&mut long.as_slice()).await,
            Err(HeadError::TooLarge)
        );
        // The end of the head split across reads is still found.
        let (mut client, mut server) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move { read_head(&mut server).await });
        client.write_all(b"GET /cb HTTP/1.1\r\n\r").await.unwrap();
        client.flush().await.unwrap();
        tokio::task::yield_now().await;
        client.write_all(b"\n").await.unwrap();
        assert_eq!(reader.await.unwrap().unwrap(), b"GET /cb HTTP/1.1\r\n\r\n");
        let mut closed: &[u8] = b"GET /cb HTTP/1.1\r\n";
        assert_eq!(read_head(&mut closed).await, Err(HeadError::Closed));
    }

    #[test]
    fn answers_echo_nothing_and_close() {
        let page = String::from_utf8(Answer::Received.response()).unwrap();
        assert!(page.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"));
        assert!(page.contains("\r\nConnection: close\r\n"));
        assert!(page.contains("You can close this window."));
        assert!(page.ends_with(&format!(
            "Content-Length: {}\r\nCache-Control: no-store\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n\r\n{RECEIVED_PAGE}",
            RECEIVED_PAGE.len()
        )));
        let not_found = String::from_utf8(Answer::NotFound.response()).unwrap();
        assert!(not_found.starts_with("HTTP/1.1 404 Not Found\r\n"));
    }

    #[test]
    fn the_host_is_the_listeners_own_address() {
        let head = |host: &str| format!("GET /cb HTTP/1.1\r\n{host}\r\nAccept: */*\r\n\r\n");
        for ok in [
            "Host: 127.0.0.1:4000",
            "host:localhost:4000",
            "HOST: \tLOCALHOST:4000 ",
        ] {
            assert_eq!(host_check(head(ok).as_bytes(), 4000), Ok(()), "{ok}");
        }
        for (bad, answer) in [
            ("Host: evil.example:4000", Answer::Misdirected),
            ("Host: 127.0.0.1", Answer::Misdirected),
            ("Host: 127.0.0.1:4001", Answer::Misdirected),
            ("Host: 127.0.0.1:04000x", Answer::Misdirected),
            ("Host: [::1]:4000", Answer::Misdirected),
            ("Host: 127.0.0.1.evil.example:4000", Answer::Misdirected),
            ("Host: user@127.0.0.1:4000", Answer::Misdirected),
            ("X-Host: 127.0.0.1:4000", Answer::BadRequest),
            (
                "Host: 127.0.0.1:4000\r\nHost: 127.0.0.1:4000",
                Answer::BadRequest,
            ),
        ] {
            assert_eq!(host_check(head(bad).as_bytes(), 4000), Err(answer), "{bad}");
        }
        // Port 80 may be left out.
        assert_eq!(host_check(head("Host: localhost").as_bytes(), 80), Ok(()));
    }
}
