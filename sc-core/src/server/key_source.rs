//! Which key a server signs tokens with: the one the app configured (the builder, or its
//! environment variable), else the secret a cluster's master shares with its workers, else a
//! random one, announced once with a warning because its tokens die with the process.

use super::{Builder, KeySource};
use crate::auth::{AuthEngine, AuthKey};

impl KeySource {
    /// The key the app configured, or `Err` with the variable that would configure it.
    fn configured(&self, use_env: bool) -> Result<AuthKey, &str> {
        let from_env = |var: &str| {
            std::env::var(var)
                .ok()
                .filter(|v| !v.is_empty())
                .map(|v| AuthKey::Secret(v.into_bytes()))
        };
        match self {
            KeySource::Given(key) => Ok(key.clone()),
            KeySource::Env(var) => from_env(var).ok_or(var.as_str()),
            KeySource::Random => use_env
                .then(|| from_env("SC_AUTH_KEY"))
                .flatten()
                .ok_or("SC_AUTH_KEY"),
        }
    }

    /// The key this server uses. Workers of one cluster must agree on it, or a token signed by
    /// one would be rejected by the next: without a configured key they take the master's shared
    /// secret (`shared`), and the master alone warns ([`Builder::warn_if_random_key`]).
    pub(super) fn resolve(self, use_env: bool, shared: Option<AuthKey>) -> AuthKey {
        match (self.configured(use_env), shared) {
            (Ok(key), _) => key,
            (Err(_), Some(shared)) => shared,
            (Err(var), None) => {
                warn_random(var);
                AuthEngine::random_secret()
            }
        }
    }
}

impl Builder {
    /// A cluster's master: says once for all its workers that their shared key is random.
    pub(crate) fn warn_if_random_key(&self) {
        if let Err(var) = self.key.configured(self.use_env) {
            warn_random(var);
        }
    }
}

fn warn_random(var: &str) {
    tracing::warn!(
        "no auth key configured: tokens are signed with a random key and will not survive a \
         restart (every user is logged out); set {var} to a secret to keep them (`sc dev` sets \
         one per app)"
    );
}
