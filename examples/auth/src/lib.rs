//! `auth`: login with a password, tokens that expire, and a protected channel.
//!
//! - invoke `login {"user":"ann","password":"secret"}`: checks the password (two demo users; a
//!   real app asks its database) and issues a token that expires after `token_seconds`;
//! - invoke `whoami`: the logged-in user, or `AuthError` (also once the token has expired);
//! - `inbox/{user}` is a typed channel whose declaration is its contract: only its owner may
//!   subscribe (`subscribe = own_inbox_only`, a guard) and only the server publishes (the
//!   default), so a forged `#publish` to someone's inbox is refused;
//! - invoke `send {"to":"bob","text":"hi"}`: a logged-in user drops a note in someone's inbox.

use sc_core::prelude::*;
use sc_core::socket::AuthTokenOptions;

/// What an inbox receives. `TS`: in the TypeScript contract `sc types` writes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, TS)]
#[ts(crate = "sc_core::ts_rs")]
pub struct Note {
    pub from: String,
    pub text: String,
}

/// `inbox/{user}`: notes for one user, read by that user only, written by the server only.
#[channel("inbox/{user}", message = Note, subscribe = own_inbox_only)]
pub struct Inbox {
    pub user: String,
}

#[derive(Deserialize)]
struct Claims {
    user: String,
}

#[derive(Deserialize, TS)]
#[ts(crate = "sc_core::ts_rs")]
struct Login {
    user: String,
    password: String,
}

#[derive(Deserialize, TS)]
#[ts(crate = "sc_core::ts_rs")]
struct Send {
    to: String,
    text: String,
}

/// How long a token lives, in seconds.
#[derive(Clone, Copy)]
struct TokenSeconds(u64);

const USERS: &[(&str, &str)] = &[("ann", "secret"), ("bob", "hunter2")];

#[event("login")]
async fn login(
    socket: Socket,
    State(TokenSeconds(seconds)): State<TokenSeconds>,
    Json(login): Json<Login>,
) -> Result<(), ScError> {
    let known = USERS
        .iter()
        .any(|(u, p)| *u == login.user && *p == login.password);
    if !known {
        return Err(ScError::new("LoginError", "unknown user or wrong password"));
    }
    let options = AuthTokenOptions {
        expires_in: Some(seconds),
        ..Default::default()
    };
    socket
        .set_auth_token_with(&serde_json::json!({ "user": login.user }), options)
        .await?;
    Ok(())
}

#[event("whoami")]
async fn whoami(Auth(me): Auth<Claims>) -> Json<String> {
    Json(me.user)
}

#[event("send")]
async fn send(
    exchange: Exchange,
    Auth(me): Auth<Claims>,
    Json(send): Json<Send>,
) -> Result<(), ScError> {
    let note = Note {
        from: me.user,
        text: send.text,
    };
    exchange.publish(&Inbox { user: send.to }, &note).await?;
    Ok(())
}

/// Only the owner of an inbox may read it (the inbox's subscribe guard).
async fn own_inbox_only(
    Channel(inbox): Channel<Inbox>,
    MaybeAuth(me): MaybeAuth<Claims>,
) -> Result<(), Block> {
    match me {
        Some(me) if me.user == inbox.user => Ok(()),
        Some(_) => Err(Block::new(ScError::new(
            "Forbidden",
            "this is not your inbox",
        ))),
        None => Err(Block::new(ScError::new("AuthRequired", "log in first"))),
    }
}

/// The app, with tokens that live `token_seconds`.
pub fn app(token_seconds: u64) -> App {
    handlers![Inbox, login, whoami, send].state(TokenSeconds(token_seconds))
}
