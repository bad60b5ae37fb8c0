//! [`MiddlewareKind`]: the kinds of action a socket performs, each also the middleware stream it
//! runs through. One list ([`kinds!`]) makes the enum, its names and the per-kind marker traits
//! that `#[middleware(kind)]` checks extractors against; a test compares it with the macro's own
//! table in `sc-macros/src/middleware.rs`, so adding a kind is one edit here plus one row there,
//! and forgetting the row fails the test.

/// Generates [`MiddlewareKind`] and the marker traits from one list.
macro_rules! kinds {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident = $name:literal, verb $verb:literal, stream $stream:literal,
        $marker:ident { $message:literal, $label:literal, $note:literal };
    )*) => {
        /// The kind of an action, and the middleware that runs for it.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum MiddlewareKind {
            $($(#[doc = $doc])* $variant,)*
        }

        impl MiddlewareKind {
            /// Every kind, in the order the reference runs them for a connection.
            pub const ALL: [MiddlewareKind; [$(stringify!($variant)),*].len()] =
                [$(Self::$variant),*];

            /// The name in `#[middleware(name)]`.
            pub fn name(self) -> &'static str {
                match self { $(Self::$variant => $name,)* }
            }

            /// The reference's verb for the action, used in `SilentMiddlewareBlockedError`
            /// messages.
            pub fn verb(self) -> &'static str {
                match self { $(Self::$variant => $verb,)* }
            }

            /// The middleware stream the reference runs the action in: `handshake`,
            /// `inboundRaw`, `inbound` or `outbound`.
            pub fn stream(self) -> &'static str {
                match self { $(Self::$variant => $stream,)* }
            }

            /// The `__private` marker trait of the extractors available to this kind.
            #[cfg(test)]
            fn marker(self) -> &'static str {
                match self { $(Self::$variant => stringify!($marker),)* }
            }
        }

        /// Marker traits named by the checks `#[middleware(kind)]` and `#[event]` generate: an
        /// extractor implements the trait of every kind that provides it.
        #[doc(hidden)]
        pub mod markers {
            /// Extractors usable in `#[event]` handlers.
            #[diagnostic::on_unimplemented(
                message = "`{Self}` is not available in an `#[event]` handler",
                label = "not available in event handlers",
                note = "events have no channel: `Channel<T>` is for `subscribe`, `publish_in` and `publish_out` middleware"
            )]
            pub trait UsableInEvent {
                /// Named by the generated check.
                const OK: () = ();
            }
            $(
                #[doc = concat!("Extractors usable in `", $name, "` middleware.")]
                #[diagnostic::on_unimplemented(message = $message, label = $label, note = $note)]
                pub trait $marker {
                    /// Named by the generated check.
                    const OK: () = ();
                }
            )*
        }
    };
}

kinds! {
    /// The HTTP upgrade request, before any WebSocket exists. Block: HTTP 401 with the error's
    /// message as the body; the JS client reports `connectAbort` 1006 and retries with backoff.
    HandshakeWs = "handshake_ws", verb "handshakeWS", stream "handshake",
    UsableInHandshakeWs {
        "`{Self}` is not available in `handshake_ws` middleware",
        "not available before the WebSocket exists",
        "`handshake_ws` middleware runs on the HTTP upgrade request: there is no socket, auth token, payload, event or channel yet; use `RequestInfo` (URL, headers, peer), `State<T>`, `Exchange` or `ServerHandle`, or move the check to `#[middleware(handshake)]`"
    };
    /// The `#handshake` packet, before its reply. Block: `{"rid":N,"error":{..,"statusCode":S}}`,
    /// then close with `S` (default 4008); set it with [`Block::status_code`](super::Block::status_code).
    Handshake = "handshake", verb "handshakeSC", stream "handshake",
    UsableInHandshake {
        "`{Self}` is not available in `handshake` middleware",
        "not available in `handshake` middleware",
        "`EventName` exists only for events (`#[event]`, `transmit` and `invoke` middleware) and `Channel<T>` only for `subscribe`, `publish_in` and `publish_out` middleware"
    };
    /// Every inbound message as text, before decoding (responses to server invokes and pongs
    /// excepted). Block: the message is dropped silently, even an invoke.
    InboundRaw = "inbound_raw", verb "message", stream "inboundRaw",
    UsableInInboundRaw {
        "`{Self}` is not available in `inbound_raw` middleware",
        "not available in `inbound_raw` middleware",
        "`EventName` exists only for events (`#[event]`, `transmit` and `invoke` middleware) and `Channel<T>` only for `subscribe`, `publish_in` and `publish_out` middleware"
    };
    /// A client transmit. Block: dropped, nothing is sent.
    Transmit = "transmit", verb "transmit", stream "inbound",
    UsableInTransmit {
        "`{Self}` is not available in `transmit` middleware",
        "not available in `transmit` middleware",
        "`Channel<T>` exists only for `subscribe`, `publish_in` and `publish_out` middleware"
    };
    /// A client invoke. Block: `{"rid":N,"error":E}`.
    Invoke = "invoke", verb "invoke", stream "inbound",
    UsableInInvoke {
        "`{Self}` is not available in `invoke` middleware",
        "not available in `invoke` middleware",
        "`Channel<T>` exists only for `subscribe`, `publish_in` and `publish_out` middleware"
    };
    /// `#subscribe`. Block: error reply; the JS client emits `subscribeFail`.
    Subscribe = "subscribe", verb "subscribe", stream "inbound",
    UsableInSubscribe {
        "`{Self}` is not available in `subscribe` middleware",
        "not available in `subscribe` middleware",
        "`EventName` exists only for events (`#[event]`, `transmit` and `invoke` middleware)"
    };
    /// A client `#publish`. Block: error reply if the publish had a cid; not published.
    PublishIn = "publish_in", verb "publishIn", stream "inbound",
    UsableInPublishIn {
        "`{Self}` is not available in `publish_in` middleware",
        "not available in `publish_in` middleware",
        "`EventName` exists only for events (`#[event]`, `transmit` and `invoke` middleware)"
    };
    /// One delivery of a publication to one subscriber. Block: that subscriber misses it.
    /// `Json(data)` changes what that subscriber receives. Runs on the subscriber's own writer,
    /// in order, so a slow one delays only that subscriber.
    PublishOut = "publish_out", verb "publishOut", stream "outbound",
    UsableInPublishOut {
        "`{Self}` is not available in `publish_out` middleware",
        "not available in `publish_out` middleware",
        "`EventName` exists only for events (`#[event]`, `transmit` and `invoke` middleware)"
    };
    /// A token (from `#handshake` or `#authenticate`) that verified. Block: the socket stays
    /// unauthenticated and the error becomes its `authError`; with `isBadToken: true` the client
    /// is also told to drop the token (`#removeAuthToken`).
    Authenticate = "authenticate", verb "authenticate", stream "inbound",
    UsableInAuthenticate {
        "`{Self}` is not available in `authenticate` middleware",
        "not available in `authenticate` middleware",
        "`EventName` exists only for events (`#[event]`, `transmit` and `invoke` middleware) and `Channel<T>` only for `subscribe`, `publish_in` and `publish_out` middleware"
    };
}

impl MiddlewareKind {
    /// Position in [`MiddlewareKind::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The proc-macro crate cannot depend on sc-core, so its table of kinds is a second list:
    /// this test fails when the two diverge.
    #[test]
    fn the_macro_table_lists_every_kind_with_its_variant_and_marker() {
        let table = include_str!("../../../sc-macros/src/middleware.rs");
        let rows = table.matches("    Kind {").count();
        assert_eq!(
            rows,
            MiddlewareKind::ALL.len(),
            "sc-macros/src/middleware.rs KINDS has {rows} rows, MiddlewareKind has {} kinds",
            MiddlewareKind::ALL.len()
        );
        for kind in MiddlewareKind::ALL {
            let row = format!(
                "name: \"{}\",\n        variant: \"{:?}\",\n        usable: \"{}\",",
                kind.name(),
                kind,
                kind.marker()
            );
            assert!(
                table.contains(&row),
                "sc-macros/src/middleware.rs has no row for {kind:?}: expected\n{row}"
            );
        }
        for (i, kind) in MiddlewareKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
    }
}
