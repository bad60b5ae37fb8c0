//! Authentication: the stored token sent in each `#handshake` (the official client's token
//! storage), whether the connection is authenticated and with which token, the handshake's
//! `authError`, and the server's `#setAuthToken` / `#removeAuthToken`. Owns [`AuthState`].

use serde_json::{Map, Value};

use super::codec::{self, ScError};
use super::{emit, ClientEvent, State};

/// The client's token and authenticated state.
pub(super) struct AuthState {
    /// The token sent in the next `#handshake` (the official client's token storage).
    stored_token: Option<String>,
    authenticated: bool,
    /// The token the client is authenticated with.
    signed_token: Option<String>,
    claims: Option<Map<String, Value>>,
    /// `authError` of the last handshake reply.
    auth_error: Option<ScError>,
}

impl AuthState {
    pub(super) fn new(stored_token: Option<String>) -> Self {
        Self {
            stored_token,
            authenticated: false,
            signed_token: None,
            claims: None,
            auth_error: None,
        }
    }

    pub(super) fn stored_token(&self) -> Option<String> {
        self.stored_token.clone()
    }

    pub(super) fn is_authenticated(&self) -> bool {
        self.authenticated
    }
}

impl State {
    pub(crate) fn signed_token(&self) -> Option<String> {
        self.auth.signed_token.clone()
    }

    pub(crate) fn claims(&self) -> Option<Map<String, Value>> {
        self.auth.claims.clone()
    }

    pub(crate) fn auth_error(&self) -> Option<ScError> {
        self.auth.auth_error.clone()
    }

    pub(crate) fn is_authenticated(&self) -> bool {
        self.auth.authenticated
    }

    /// The official `_changeToAuthenticatedState`.
    pub(crate) fn set_authenticated(&mut self, token: String) {
        self.auth.claims = codec::token_claims(&token);
        self.auth.signed_token = Some(token.clone());
        if !self.auth.authenticated {
            self.auth.authenticated = true;
            self.process_pending_subscriptions();
        }
        emit(
            &self.events,
            ClientEvent::Authenticate {
                signed_token: token,
            },
        );
    }

    /// The official `_changeToUnauthenticatedStateAndClearTokens`.
    pub(crate) fn set_unauthenticated(&mut self) {
        if self.auth.authenticated {
            self.auth.authenticated = false;
            self.auth.signed_token = None;
            self.auth.claims = None;
            emit(&self.events, ClientEvent::Deauthenticate);
        }
    }

    /// `#removeAuthToken` from the server, or `deauthenticate()`: drops the stored token too.
    pub(crate) fn remove_token(&mut self) {
        self.auth.stored_token = None;
        self.set_unauthenticated();
    }

    /// Stores `token` for the next handshakes (official `auth.saveToken`).
    pub(crate) fn store_token(&mut self, token: String) {
        self.auth.stored_token = Some(token);
    }

    /// The auth part of a handshake reply. The client counts as authenticated only with the
    /// token it sent: the server never sends one back.
    pub(super) fn on_handshake_auth(
        &mut self,
        is_authenticated: bool,
        sent_token: Option<String>,
        auth_error: Option<ScError>,
    ) {
        self.auth.auth_error = auth_error;
        match (is_authenticated, sent_token) {
            (true, Some(token)) => self.set_authenticated(token),
            _ => self.set_unauthenticated(),
        }
    }

    /// `#setAuthToken` (`{"token":T}`): store and authenticate with T. As an invoke it is
    /// answered, with an error when T is missing.
    pub(super) fn on_set_auth_token(&mut self, data: Option<Value>, cid: Option<u64>) {
        let token = data
            .as_ref()
            .and_then(|d| d.get("token"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let result = match token {
            Some(token) => {
                self.auth.stored_token = Some(token.clone());
                self.set_authenticated(token);
                Ok(None)
            }
            None => Err(ScError::new(
                "InvalidMessageError",
                "No token data provided by #setAuthToken event",
            )),
        };
        if let Some(cid) = cid {
            self.send(codec::response_frame(cid, &result));
        }
    }

    /// `#removeAuthToken`: forget the token. As an invoke it is answered.
    pub(super) fn on_remove_auth_token(&mut self, cid: Option<u64>) {
        self.remove_token();
        if let Some(cid) = cid {
            self.send(codec::response_frame(cid, &Ok(None)));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testkit::{options, Rig};
    use super::*;

    /// {"alg":"HS256","typ":"JWT"}.{"username":"alice","iat":1,"exp":2}.sig
    const TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VybmFtZSI6ImFsaWNlIiwiaWF0IjoxLCJleHAiOjJ9.c2ln";

    fn set_auth_token(token: &str) -> String {
        json!({"event": "#setAuthToken", "data": {"token": token}}).to_string()
    }

    #[test]
    fn set_auth_token_authenticates_and_is_sent_in_the_next_handshake() {
        let mut rig = Rig::open();
        rig.feed(&set_auth_token(TOKEN));
        assert!(rig.st.is_authenticated());
        assert_eq!(rig.st.signed_token().as_deref(), Some(TOKEN));
        let claims = rig.st.claims().expect("claims decoded");
        assert_eq!(claims.get("username"), Some(&json!("alice")));
        assert_eq!(
            rig.events(),
            [ClientEvent::Authenticate {
                signed_token: TOKEN.to_owned()
            }]
        );
        assert!(rig.sent().is_empty(), "a transmit is not answered");

        rig.close(4000);
        rig.reconnect();
        let handshake =
            format!(r##"{{"event":"#handshake","data":{{"authToken":"{TOKEN}"}},"cid":2}}"##);
        assert_eq!(rig.sent(), [handshake]);
    }

    #[test]
    fn set_auth_token_as_an_invoke_is_confirmed() {
        let mut rig = Rig::open();
        rig.feed(r##"{"event":"#setAuthToken","cid":1,"data":{"token":"h.p.s"}}"##);
        assert_eq!(rig.sent(), [r#"{"rid":1}"#]);
        assert!(rig.st.is_authenticated());

        let mut rig = Rig::open();
        rig.feed(r##"{"event":"#setAuthToken","cid":4,"data":{"token":17}}"##);
        rig.feed(r##"{"event":"#setAuthToken","data":{}}"##);
        assert_eq!(
            rig.sent(),
            [
                r#"{"rid":4,"error":{"message":"No token data provided by #setAuthToken event","name":"InvalidMessageError"}}"#
            ]
        );
        assert!(!rig.st.is_authenticated());
        assert!(rig.events().is_empty());
    }

    #[test]
    fn remove_auth_token_deauthenticates_and_forgets_the_token() {
        let mut opts = options();
        opts.auth_token = Some("h.p.s".to_owned());
        let mut rig = Rig::connecting(opts);
        rig.reply_handshake(json!({"id": "s", "pingTimeout": 1000, "isAuthenticated": true}));
        rig.sent();
        rig.events();

        rig.feed(r##"{"event":"#removeAuthToken"}"##);
        assert_eq!(rig.events(), [ClientEvent::Deauthenticate]);
        assert!(!rig.st.is_authenticated());
        assert_eq!(rig.st.signed_token(), None);
        assert_eq!(rig.st.claims(), None);
        assert!(rig.sent().is_empty());

        // Already unauthenticated: answered when invoked, nothing to emit.
        rig.feed(r##"{"event":"#removeAuthToken","cid":3}"##);
        assert_eq!(rig.sent(), [r#"{"rid":3}"#]);
        assert!(rig.events().is_empty());

        rig.close(4000);
        rig.reconnect();
        assert_eq!(
            rig.sent(),
            [r##"{"event":"#handshake","data":{"authToken":null},"cid":2}"##]
        );
    }

    #[test]
    fn a_handshake_that_refuses_the_stored_token_deauthenticates() {
        let mut rig = Rig::open();
        rig.feed(&set_auth_token("h.p.s"));
        rig.close(1006);
        rig.reconnect();
        rig.events();
        rig.reply_handshake(json!({
            "id": "s2", "pingTimeout": 1000, "isAuthenticated": false,
            "authError": {"name": "AuthTokenInvalidError", "message": "invalid signature"},
        }));
        let events = rig.events();
        assert_eq!(events[0], ClientEvent::Deauthenticate);
        assert!(!rig.st.is_authenticated());
        assert_eq!(
            rig.st.auth_error().map(|e| e.name().to_owned()).as_deref(),
            Some("AuthTokenInvalidError")
        );
        // The refused token is still stored (only #removeAuthToken drops it).
        rig.close(1006);
        rig.reconnect();
        assert!(rig.sent()[0].contains(r#""authToken":"h.p.s""#));
    }

    #[test]
    fn the_api_side_stores_and_removes_tokens() {
        let mut rig = Rig::connecting(options());
        rig.st.store_token("h.p.s".to_owned());
        rig.st.set_authenticated("h.p.s".to_owned());
        rig.st.set_unauthenticated();
        assert_eq!(
            rig.events()[1..],
            [
                ClientEvent::Authenticate {
                    signed_token: "h.p.s".to_owned()
                },
                ClientEvent::Deauthenticate,
            ]
        );
        // set_unauthenticated keeps the stored token; remove_token does not.
        rig.close(1006);
        rig.reconnect();
        assert!(rig.sent()[0].contains(r#""authToken":"h.p.s""#));
        rig.st.remove_token();
        rig.close(1006);
        rig.reconnect();
        assert!(rig.sent()[0].contains(r#""authToken":null"#));
    }
}
