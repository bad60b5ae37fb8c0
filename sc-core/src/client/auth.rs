//! [`Client`] methods for authentication: the token and its claims, `authenticate`
//! (`#authenticate`) and `deauthenticate` (`#removeAuthToken`).

use serde_json::{Map, Value};
use tokio::time::Instant;

use super::codec::{self, ScError};
use super::state::{Outbound, Phase};
use super::{AuthStatus, Client, InvokeError};

impl Client {
    /// The signed token (JWT) the client is authenticated with.
    pub fn auth_token(&self) -> Option<String> {
        self.shared().lock().signed_token()
    }

    /// The claims of [`Client::auth_token`]: its middle segment, decoded but **not verified**.
    pub fn auth_claims(&self) -> Option<Map<String, Value>> {
        self.shared().lock().claims()
    }

    /// Why the server rejected the token sent in the last handshake (its `authError`), e.g.
    /// `AuthTokenExpiredError` for an expired [`ClientOptions::auth_token`](super::ClientOptions::auth_token).
    pub fn auth_error(&self) -> Option<ScError> {
        self.shared().lock().auth_error()
    }

    /// Whether the client is authenticated.
    pub fn is_authenticated(&self) -> bool {
        self.shared().lock().is_authenticated()
    }

    /// Authenticates the connection with a signed token (`#authenticate`). On success the
    /// token is stored and sent in later handshakes. A rejection by the server
    /// ([`InvokeError::Remote`], e.g. `AuthTokenInvalidError`) leaves the client
    /// unauthenticated; a timeout or bad connection keeps the previous state.
    pub async fn authenticate(&self, token: &str) -> Result<AuthStatus, InvokeError> {
        let result = self
            .call("#authenticate", Some(codec::json_string(token)))
            .await;
        let data = match result {
            Ok(data) => data,
            Err(e) => {
                if matches!(e, InvokeError::Remote(_)) {
                    self.shared().lock().set_unauthenticated();
                }
                return Err(e);
            }
        };
        let status = data.as_ref().and_then(Value::as_object);
        let mut st = self.shared().lock();
        let (is_authenticated, auth_error) = match status.and_then(|s| s.get("isAuthenticated")) {
            Some(v) if !v.is_null() => (
                codec::is_truthy(v),
                status
                    .and_then(|s| s.get("authError"))
                    .filter(|e| !e.is_null())
                    .map(ScError::from_wire),
            ),
            _ => (st.is_authenticated(), None),
        };
        if is_authenticated {
            st.set_authenticated(token.to_owned());
        } else {
            st.set_unauthenticated();
        }
        st.store_token(token.to_owned());
        Ok(AuthStatus {
            is_authenticated,
            auth_error,
        })
    }

    /// Drops the token locally and tells the server (`#removeAuthToken`, never answered) when
    /// connected or connecting.
    pub async fn deauthenticate(&self) {
        let poke = {
            let mut st = self.shared().lock();
            st.remove_token();
            if st.phase() == Phase::Closed {
                None
            } else {
                let req = st.next_req();
                st.outbound(Outbound {
                    req,
                    event: "#removeAuthToken".to_owned(),
                    data: None,
                    reply: None,
                    deadline: Instant::now() + self.shared().opts.ack_timeout,
                })
                .ok()
            }
        };
        if let Some(poke) = poke {
            self.poke(poke);
        }
    }
}
