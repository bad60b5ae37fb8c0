//! The HTTP upgrade request a socket came from: [`RequestInfo`], what handlers see, and
//! [`KeptRequest`], what a socket keeps of it for its whole life.
//!
//! A socket keeps its request as text in one allocation, not as a `Uri` and a `HeaderMap`: those
//! cost about 250 bytes more per idle socket with a load generator's three headers and far more
//! with a browser's (issue 19, idle memory). The parsed form is made when someone asks for it.

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Uri};

/// The HTTP upgrade request a socket came from.
#[derive(Clone, Debug, Default)]
pub struct RequestInfo {
    /// Path and query, e.g. `/socketcluster/?foo=bar`.
    pub uri: Uri,
    /// Request headers, without those that only negotiated the upgrade (`Connection`, `Upgrade`,
    /// `Sec-WebSocket-Key`, `-Version`, `-Extensions`; `Sec-WebSocket-Protocol` stays).
    pub headers: HeaderMap,
    /// The peer's address.
    pub remote_addr: Option<SocketAddr>,
}

impl RequestInfo {
    /// The value of query parameter `name` (percent-decoded), if present.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&self.uri).ok()?;
        pairs.0.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

/// What a socket keeps of its upgrade request: the peer's address, the URI and the headers as
/// `peer\nuri\nname:value\nname:value\n` (an empty line for no peer; header names hold no `:`,
/// values no line feed: the HTTP parser refused those), and the parsed [`RequestInfo`] once
/// [`Socket::request`](crate::Socket::request) was called (it hands out a reference, so what it
/// made is kept; the `RequestInfo` extractor makes a fresh one instead, and keeps nothing).
#[derive(Clone, Debug, Default)]
pub(crate) struct KeptRequest {
    head: Box<[u8]>,
    parsed: OnceLock<Box<RequestInfo>>,
}

impl KeptRequest {
    /// Copies what is kept: hyper's parsed values share its 8 KiB read buffer, and holding any of
    /// them would pin all of it to the socket.
    /// The headers that only negotiated the upgrade are left out.
    pub(crate) fn new(uri: &Uri, headers: &HeaderMap, remote_addr: Option<SocketAddr>) -> Self {
        const UPGRADE_ONLY: [HeaderName; 5] = [
            header::CONNECTION,
            header::UPGRADE,
            header::SEC_WEBSOCKET_KEY,
            header::SEC_WEBSOCKET_VERSION,
            header::SEC_WEBSOCKET_EXTENSIONS,
        ];
        let kept = || headers.iter().filter(|(n, _)| !UPGRADE_ONLY.contains(n));
        let peer = remote_addr.map(|a| a.to_string()).unwrap_or_default();
        let uri = uri.to_string();
        let len = peer.len()
            + uri.len()
            + 2
            + kept()
                .map(|(n, v)| n.as_str().len() + v.len() + 2)
                .sum::<usize>();
        let mut head = Vec::with_capacity(len);
        head.extend_from_slice(peer.as_bytes());
        head.push(b'\n');
        head.extend_from_slice(uri.as_bytes());
        head.push(b'\n');
        for (name, value) in kept() {
            head.extend_from_slice(name.as_str().as_bytes());
            head.push(b':');
            head.extend_from_slice(value.as_bytes());
            head.push(b'\n');
        }
        Self {
            head: head.into_boxed_slice(),
            parsed: OnceLock::new(),
        }
    }

    /// The request, parsed on the first call and kept.
    pub(crate) fn info(&self) -> &RequestInfo {
        self.parsed.get_or_init(|| Box::new(self.parse()))
    }

    /// The request as a value of its own; keeps nothing.
    pub(crate) fn to_info(&self) -> RequestInfo {
        match self.parsed.get() {
            Some(info) => RequestInfo::clone(info),
            None => self.parse(),
        }
    }

    fn parse(&self) -> RequestInfo {
        let mut lines = self.head.split(|b| *b == b'\n');
        let remote_addr = lines
            .next()
            .and_then(|line| std::str::from_utf8(line).ok()?.parse().ok());
        let mut lines = lines.filter(|line| !line.is_empty());
        // Both were valid when kept, so neither fallback is taken; a default is still better
        // than a panic on a client's bytes.
        let uri = lines
            .next()
            .and_then(|line| Uri::try_from(line).ok())
            .unwrap_or_default();
        let mut headers = HeaderMap::new();
        for line in lines {
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                continue;
            };
            let (name, value) = (&line[..colon], &line[colon + 1..]);
            if let (Ok(name), Ok(value)) =
                (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
            {
                headers.append(name, value);
            }
        }
        RequestInfo {
            uri,
            headers,
            remote_addr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(uri: &str, headers: &[(&str, &[u8])]) -> KeptRequest {
        let map: HeaderMap = headers
            .iter()
            .map(|(n, v)| {
                (
                    HeaderName::from_bytes(n.as_bytes()).expect("name"),
                    HeaderValue::from_bytes(v).expect("value"),
                )
            })
            .collect();
        let uri: Uri = uri.parse().expect("uri");
        KeptRequest::new(&uri, &map, Some(([10, 0, 0, 1], 4242).into()))
    }

    #[test]
    fn the_kept_request_gives_back_the_uri_every_header_and_the_peer() {
        let k = kept(
            "/socketcluster/?token=a%20b&x=1",
            &[
                ("host", b"example.com:8000"),
                ("cookie", b"a=1; b=2"),
                ("cookie", b"c=3"),
                ("x-odd", b"time: 12:00 \xe9t\xe9"),
                ("x-empty", b""),
                ("sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
                ("sec-websocket-protocol", b"chat"),
            ],
        );
        let info = k.to_info();
        assert_eq!(info.uri, "/socketcluster/?token=a%20b&x=1");
        assert_eq!(info.query_param("token").as_deref(), Some("a b"));
        assert_eq!(info.headers["host"], "example.com:8000");
        let cookies: Vec<_> = info.headers.get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1; b=2", "c=3"]);
        assert_eq!(
            info.headers["x-odd"].as_bytes(),
            b"time: 12:00 \xe9t\xe9".as_slice()
        );
        assert_eq!(info.headers["x-empty"], "");
        assert_eq!(info.headers["sec-websocket-protocol"], "chat");
        assert!(
            info.headers.get("sec-websocket-key").is_none(),
            "only the upgrade's own headers are left out"
        );
        assert_eq!(info.headers.len(), 6);
        assert_eq!(info.remote_addr, Some(([10, 0, 0, 1], 4242).into()));
    }

    #[test]
    fn the_peer_may_be_absent_or_ipv6() {
        let uri: Uri = "/socketcluster/".parse().expect("uri");
        let none = KeptRequest::new(&uri, &HeaderMap::new(), None).to_info();
        assert_eq!((none.remote_addr, none.uri.path()), (None, "/socketcluster/"));
        let v6: SocketAddr = "[2001:db8::1]:443".parse().expect("addr");
        let info = KeptRequest::new(&uri, &HeaderMap::new(), Some(v6)).to_info();
        assert_eq!(info.remote_addr, Some(v6));
        assert!(info.headers.is_empty());
        assert_eq!(KeptRequest::default().to_info().uri, "/");
    }

    #[test]
    fn only_the_reference_keeps_the_parsed_request() {
        let k = kept("/socketcluster/", &[("origin", b"http://a.test")]);
        assert_eq!(k.to_info().headers["origin"], "http://a.test");
        assert!(k.parsed.get().is_none(), "to_info keeps nothing");
        let first: *const RequestInfo = k.info();
        assert!(std::ptr::eq(first, k.info()), "info parses once");
        assert_eq!(k.to_info().headers["origin"], "http://a.test");
    }
}
