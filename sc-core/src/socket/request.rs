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

/// What a socket keeps of its upgrade request: the peer's address (see [`encode_peer`]), then
/// the URI and the headers as `uri\nname:value\nname:value\n` (header names hold no `:`, values
/// no line feed: the HTTP parser refused those), and the parsed [`RequestInfo`] once
/// [`Socket::request`](crate::Socket::request) was called (it hands out a reference, so what it
/// made is kept; the `RequestInfo` extractor makes a fresh one instead, and keeps nothing).
#[derive(Debug, Default)]
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
        // Most requests are in origin form (`/path?query`), whose text is at hand.
        let uri = match uri.path_and_query() {
            Some(p) if uri.scheme().is_none() && uri.authority().is_none() => {
                std::borrow::Cow::Borrowed(p.as_str())
            }
            _ => std::borrow::Cow::Owned(uri.to_string()),
        };
        let peer_len = match remote_addr {
            None => 1,
            Some(SocketAddr::V4(_)) => 1 + 4 + 2,
            Some(SocketAddr::V6(_)) => 1 + 16 + 2 + 4 + 4,
        };
        let len = peer_len
            + uri.len()
            + 1
            + kept()
                .map(|(n, v)| n.as_str().len() + v.len() + 2)
                .sum::<usize>();
        // Exactly: `into_boxed_slice` would otherwise copy it into a smaller allocation.
        let mut head = Vec::with_capacity(len);
        encode_peer(&mut head, remote_addr);
        head.extend_from_slice(uri.as_bytes());
        head.push(b'\n');
        for (name, value) in kept() {
            head.extend_from_slice(name.as_str().as_bytes());
            head.push(b':');
            head.extend_from_slice(value.as_bytes());
            head.push(b'\n');
        }
        debug_assert_eq!(head.len(), len);
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
        let (remote_addr, text) = decode_peer(&self.head);
        let mut lines = text.split(|b| *b == b'\n').filter(|line| !line.is_empty());
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

/// The peer's address in a few bytes (formatting it as text costs more than the rest of the
/// request): `0` for none; `4`, the address, the port; or `6`, the address, the port, the flow
/// info and the scope id (ports and numbers big-endian).
fn encode_peer(head: &mut Vec<u8>, peer: Option<SocketAddr>) {
    match peer {
        None => head.push(0),
        Some(SocketAddr::V4(a)) => {
            head.push(4);
            head.extend_from_slice(&a.ip().octets());
            head.extend_from_slice(&a.port().to_be_bytes());
        }
        Some(SocketAddr::V6(a)) => {
            head.push(6);
            head.extend_from_slice(&a.ip().octets());
            head.extend_from_slice(&a.port().to_be_bytes());
            head.extend_from_slice(&a.flowinfo().to_be_bytes());
            head.extend_from_slice(&a.scope_id().to_be_bytes());
        }
    }
}

/// The peer's address [`encode_peer`] wrote at the start of `head`, and what follows it.
fn decode_peer(head: &[u8]) -> (Option<SocketAddr>, &[u8]) {
    fn take<const N: usize>(bytes: &mut &[u8]) -> Option<[u8; N]> {
        let (first, rest) = bytes.split_first_chunk::<N>()?;
        *bytes = rest;
        Some(*first)
    }
    let mut rest = head;
    let peer = match take::<1>(&mut rest) {
        Some([4]) => (|| {
            let ip = take::<4>(&mut rest)?;
            let port = u16::from_be_bytes(take(&mut rest)?);
            Some(SocketAddr::from((ip, port)))
        })(),
        Some([6]) => (|| {
            let ip = std::net::Ipv6Addr::from(take::<16>(&mut rest)?);
            let port = u16::from_be_bytes(take(&mut rest)?);
            let flowinfo = u32::from_be_bytes(take(&mut rest)?);
            let scope_id = u32::from_be_bytes(take(&mut rest)?);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip, port, flowinfo, scope_id,
            )))
        })(),
        _ => None,
    };
    (peer, rest)
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
        assert_eq!(
            (none.remote_addr, none.uri.path()),
            (None, "/socketcluster/")
        );
        let v6: SocketAddr = "[2001:db8::1%7]:443".parse().expect("addr");
        let info = KeptRequest::new(&uri, &HeaderMap::new(), Some(v6)).to_info();
        assert_eq!(info.remote_addr, Some(v6));
        assert!(info.headers.is_empty());
        assert_eq!(KeptRequest::default().to_info().uri, "/");
        // A request target in absolute form keeps its scheme and authority.
        let absolute: Uri = "http://example.com:8000/socketcluster/?a=1"
            .parse()
            .expect("uri");
        let info = KeptRequest::new(&absolute, &HeaderMap::new(), None).to_info();
        assert_eq!(info.uri, absolute);
        assert_eq!(info.query_param("a").as_deref(), Some("1"));
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
