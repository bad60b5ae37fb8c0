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
