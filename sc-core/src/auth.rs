//! Auth tokens: the JWT engine behind `#authenticate`, the handshake's `authToken` and
//! `setAuthToken`. It owns the server's key material, the one algorithm the server accepts, the
//! claims it adds when signing (`iat`, `exp`), and the translation of every verification failure
//! into the `AuthToken*Error` objects the reference server sends (same names, messages and extra
//! fields, so the JS client reacts to them unmodified).
//!
//! Verification is done here rather than with `jsonwebtoken::decode`: the reference (node's
//! `jsonwebtoken` behind SocketCluster) checks structure, signature presence, algorithm,
//! signature, `nbf`, `exp` in that order, with no leeway and `now >= exp` meaning expired, and
//! each step has its own message. Only the cryptographic check is delegated to `jsonwebtoken`.

use crate::protocol::ScError;
use base64::engine::general_purpose::{GeneralPurpose, URL_SAFE_NO_PAD};
use base64::engine::{DecodePaddingMode, GeneralPurposeConfig};
use base64::{alphabet, Engine as _};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};
use serde_json::{Map, Number, Value};
use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest signed token accepted (and produced). Tokens come from the network, so anything longer
/// is refused before any decoding or cryptography; real tokens are a few hundred bytes.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Token lifetime in seconds when neither the claims nor the caller give one (the reference's
/// `authDefaultExpiry`: one day).
pub const DEFAULT_EXPIRY: u64 = 86_400;

/// Node decodes base64 leniently (non-zero trailing bits are ignored); a strict decoder would turn
/// some tokens the reference accepts into `invalid token`.
const B64URL_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// Which key material the server signs and verifies tokens with.
#[derive(Clone)]
pub enum AuthKey {
    /// A shared secret for the HMAC algorithms (`HS256` unless configured otherwise). The bytes
    /// are used as-is, like the reference's `authKey` string.
    Secret(Vec<u8>),
    /// A PEM private key (PKCS#1 or PKCS#8 for RSA, PKCS#8 for EC and Ed25519) to sign with and
    /// the matching PEM public key to verify with.
    KeyPair {
        /// `-----BEGIN PRIVATE KEY-----` (or `RSA PRIVATE KEY`) bytes.
        private_pem: Vec<u8>,
        /// `-----BEGIN PUBLIC KEY-----` (or `RSA PUBLIC KEY`) bytes.
        public_pem: Vec<u8>,
    },
}

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Secret(_) => f.write_str("Secret([redacted])"),
            Self::KeyPair { .. } => f.write_str("KeyPair { private_pem: [redacted], .. }"),
        }
    }
}

/// How the server's [`AuthEngine`] is configured.
#[derive(Clone, Debug)]
pub struct AuthOptions {
    /// The key material.
    pub key: AuthKey,
    /// The one algorithm tokens are signed with and accepted in. `None` means `HS256` for a
    /// secret; a key pair needs it set (RS256/384/512, PS256/384/512, ES256/384 or EdDSA).
    pub algorithm: Option<Algorithm>,
    /// Lifetime in seconds of tokens signed without an `exp` or an explicit `expires_in`.
    pub default_expiry: u64,
    /// Most key-pair verifications [`AuthEngine::verify_bounded`] runs at once (default: the
    /// number of cores).
    pub verify_concurrency: usize,
}

impl AuthOptions {
    /// Options for `key` with the default algorithm and expiry.
    pub fn new(key: AuthKey) -> Self {
        Self {
            key,
            algorithm: None,
            default_expiry: DEFAULT_EXPIRY,
            verify_concurrency: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

impl Default for AuthOptions {
    /// A fresh random secret, like the reference when the app configures no `authKey`: tokens
    /// then only survive as long as the process.
    fn default() -> Self {
        Self::new(AuthEngine::random_secret())
    }
}

/// A configuration the engine refuses at startup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthConfigError {
    /// An empty HMAC secret would make every token forgeable.
    #[error("the auth secret is empty; configure a non-empty secret, or none to get a random one")]
    EmptySecret,
    /// RS/PS/ES/EdDSA with a shared secret.
    #[error("the auth algorithm {0} needs a private/public key pair, but a shared secret was configured")]
    SecretWithAsymmetricAlgorithm(&'static str),
    /// HS* with a key pair (the classic algorithm-confusion setup).
    #[error("the auth algorithm {0} needs a shared secret, but a private/public key pair was configured")]
    KeyPairWithHmacAlgorithm(&'static str),
    /// A key pair without an algorithm: guessing one from the key is how confusion bugs start.
    #[error("an auth key pair needs an explicit algorithm (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA)")]
    MissingAlgorithm,
    /// The private key is not PEM of the kind the algorithm needs.
    #[error("the auth private key is not a PEM {kind} private key usable with {alg}{hint}")]
    InvalidPrivateKey {
        /// The configured algorithm.
        alg: &'static str,
        /// `RSA`, `EC (PKCS#8)` or `Ed25519 (PKCS#8)`.
        kind: &'static str,
        /// Extra advice when the mistake is recognisable, else empty.
        hint: &'static str,
    },
    /// The public key is not PEM of the kind the algorithm needs.
    #[error("the auth public key is not a PEM {kind} public key usable with {alg}")]
    InvalidPublicKey {
        /// The configured algorithm.
        alg: &'static str,
        /// `RSA`, `EC` or `Ed25519`.
        kind: &'static str,
    },
    /// The private key parsed but cannot produce an `alg` signature (wrong curve, a public key
    /// in the private slot, ...).
    #[error("the auth private key cannot sign with {0} (wrong key type or curve)")]
    UnusablePrivateKey(&'static str),
    /// A test signature made with the private key did not verify with the public key.
    #[error("the auth public key does not verify {0} signatures made with the auth private key; they are not a pair")]
    KeyMismatch(&'static str),
}

/// Signing failed; the server closes the socket with 4002 on it, as the reference does.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// `iat`, `exp` or `nbf` is present but not a number (node's `jsonwebtoken` refuses these).
    #[error("the auth token claim \"{0}\" should be a number of seconds")]
    InvalidClaim(&'static str),
    /// The token would be longer than [`MAX_TOKEN_LEN`], so this server would refuse it later.
    #[error("the signed auth token would be {0} bytes long, over the {MAX_TOKEN_LEN}-byte limit")]
    TooLarge(usize),
    /// The payload could not be serialised.
    #[error("the auth token payload cannot be serialised")]
    Json(#[source] serde_json::Error),
    /// The crypto backend failed.
    #[error("signing the auth token failed")]
    Crypto(#[source] jsonwebtoken::errors::Error),
}

/// Why a token was refused, one variant per distinct reference error. Converts into the
/// [`ScError`] the reference sends (`From<&AuthTokenError>` / `From<AuthTokenError>`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthTokenError {
    /// Empty token string.
    #[error("jwt must be provided")]
    Missing,
    /// Not three dot-separated parts, or longer than [`MAX_TOKEN_LEN`].
    #[error("jwt malformed")]
    Malformed,
    /// Header or payload is not base64url-encoded JSON (the header an object).
    #[error("invalid token")]
    Invalid,
    /// Empty signature part (`alg: none` tokens).
    #[error("jwt signature is required")]
    SignatureRequired,
    /// The header's `alg` is not the configured algorithm.
    #[error("invalid algorithm")]
    InvalidAlgorithm,
    /// Wrong key or tampered token.
    #[error("invalid signature")]
    InvalidSignature,
    /// `nbf` present but not a number.
    #[error("invalid nbf value")]
    InvalidNotBefore,
    /// `exp` present but not a number.
    #[error("invalid exp value")]
    InvalidExpiry,
    /// `nbf` is in the future; the token is fine, just early.
    #[error("jwt not active")]
    NotBefore {
        /// The token's `nbf`, in seconds.
        nbf: f64,
    },
    /// `exp` is now or in the past.
    #[error("jwt expired")]
    Expired {
        /// The token's `exp`, in seconds.
        exp: f64,
    },
    /// Correctly signed, but the payload is a JSON array/string/number instead of an object.
    #[error("jwt payload must be a JSON object")]
    PayloadNotObject,
}

impl AuthTokenError {
    /// The `name` the reference gives this failure.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Expired { .. } => "AuthTokenExpiredError",
            Self::NotBefore { .. } => "AuthTokenNotBeforeError",
            Self::PayloadNotObject => "AuthTokenError",
            Self::Missing
            | Self::Malformed
            | Self::Invalid
            | Self::SignatureRequired
            | Self::InvalidAlgorithm
            | Self::InvalidSignature
            | Self::InvalidNotBefore
            | Self::InvalidExpiry => "AuthTokenInvalidError",
        }
    }

    /// Whether the client should throw the token away (`isBadToken`): everything but a token that
    /// is merely not active yet.
    pub fn is_bad_token(&self) -> bool {
        !matches!(self, Self::NotBefore { .. })
    }
}

impl From<&AuthTokenError> for ScError {
    fn from(err: &AuthTokenError) -> Self {
        let sc = ScError::new(err.name(), err.to_string());
        let sc = match *err {
            AuthTokenError::Expired { exp } => sc.with("expiry", js_date_json(exp * 1000.0)),
            AuthTokenError::NotBefore { nbf } => sc.with("date", js_date_json(nbf * 1000.0)),
            _ => sc,
        };
        sc.with("isBadToken", err.is_bad_token())
    }
}

impl From<AuthTokenError> for ScError {
    fn from(err: AuthTokenError) -> Self {
        Self::from(&err)
    }
}

/// The error the server attaches when a socket's token `exp` passes during a session (unlike
/// [`AuthTokenError::Expired`], `expiry` is the raw `exp` number here, as in the reference).
pub fn session_expired_error(exp: i64) -> ScError {
    ScError::new("AuthTokenExpiredError", "The socket auth token has expired").with("expiry", exp)
}

/// True if `payload` has a numeric `exp` that is now or past (same rule as [`AuthEngine::verify`]).
pub fn is_expired(payload: &Map<String, Value>) -> bool {
    payload
        .get("exp")
        .and_then(Value::as_f64)
        .is_some_and(|exp| now_secs() >= exp)
}

/// Signs and verifies auth tokens with one key and one algorithm. Cheap to clone (shared).
#[derive(Clone)]
pub struct AuthEngine {
    inner: Arc<Inner>,
}

struct Inner {
    alg: Algorithm,
    alg_name: &'static str,
    /// `base64url({"alg":..,"typ":"JWT"})`, the same header node's `jsonwebtoken` writes.
    encoded_header: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    default_expiry: u64,
    /// Bounds the key-pair verifications on the blocking pool (an RS256 check costs tens of
    /// microseconds of CPU; a flood of them must neither stall the runtime's threads nor grow the
    /// blocking pool to hundreds of threads).
    permits: Arc<tokio::sync::Semaphore>,
    /// Key-pair verifications running now, and the most that ever ran at once: what the tests
    /// check the bound with.
    #[cfg(test)]
    in_flight: std::sync::atomic::AtomicUsize,
    #[cfg(test)]
    peak: std::sync::atomic::AtomicUsize,
}

impl fmt::Debug for AuthEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthEngine")
            .field("algorithm", &self.inner.alg_name)
            .field("default_expiry", &self.inner.default_expiry)
            .finish_non_exhaustive()
    }
}

impl AuthEngine {
    /// Validates `opts` (so a bad key fails at startup, not on the first login) and builds the
    /// engine.
    pub fn new(opts: AuthOptions) -> Result<Self, AuthConfigError> {
        let (alg, encoding, decoding) = match opts.key {
            AuthKey::Secret(secret) => {
                let alg = opts.algorithm.unwrap_or(Algorithm::HS256);
                if alg.family() != AlgorithmFamily::Hmac {
                    return Err(AuthConfigError::SecretWithAsymmetricAlgorithm(alg_name(
                        alg,
                    )));
                }
                if secret.is_empty() {
                    return Err(AuthConfigError::EmptySecret);
                }
                (
                    alg,
                    EncodingKey::from_secret(&secret),
                    DecodingKey::from_secret(&secret),
                )
            }
            AuthKey::KeyPair {
                private_pem,
                public_pem,
            } => {
                let alg = opts.algorithm.ok_or(AuthConfigError::MissingAlgorithm)?;
                let name = alg_name(alg);
                let (encoding, decoding, kind) = match alg.family() {
                    AlgorithmFamily::Hmac => {
                        return Err(AuthConfigError::KeyPairWithHmacAlgorithm(name))
                    }
                    AlgorithmFamily::Rsa => (
                        EncodingKey::from_rsa_pem(&private_pem),
                        DecodingKey::from_rsa_pem(&public_pem),
                        "RSA",
                    ),
                    AlgorithmFamily::Ec => (
                        EncodingKey::from_ec_pem(&private_pem),
                        DecodingKey::from_ec_pem(&public_pem),
                        "EC",
                    ),
                    AlgorithmFamily::Ed => (
                        EncodingKey::from_ed_pem(&private_pem),
                        DecodingKey::from_ed_pem(&public_pem),
                        "Ed25519",
                    ),
                };
                let encoding = encoding.map_err(|_| AuthConfigError::InvalidPrivateKey {
                    alg: name,
                    kind,
                    hint: private_key_hint(&private_pem),
                })?;
                let decoding =
                    decoding.map_err(|_| AuthConfigError::InvalidPublicKey { alg: name, kind })?;
                check_key_pair(alg, &encoding, &decoding)?;
                (alg, encoding, decoding)
            }
        };
        let name = alg_name(alg);
        let header = format!(r#"{{"alg":"{name}","typ":"JWT"}}"#);
        Ok(Self {
            inner: Arc::new(Inner {
                alg,
                alg_name: name,
                encoded_header: URL_SAFE_NO_PAD.encode(header),
                encoding,
                decoding,
                default_expiry: opts.default_expiry,
                permits: Arc::new(tokio::sync::Semaphore::new(opts.verify_concurrency.max(1))),
                #[cfg(test)]
                in_flight: Default::default(),
                #[cfg(test)]
                peak: Default::default(),
            }),
        })
    }

    /// A secret like the reference's default `authKey`: 32 random bytes as 64 lowercase hex
    /// characters (the hex text itself is the HMAC key).
    pub fn random_secret() -> AuthKey {
        let mut bytes = [0u8; 32];
        fill_random(&mut bytes);
        let mut hex = Vec::with_capacity(64);
        for b in bytes {
            hex.push(HEX_DIGITS[usize::from(b >> 4)]);
            hex.push(HEX_DIGITS[usize::from(b & 0xf)]);
        }
        AuthKey::Secret(hex)
    }

    /// The one algorithm this engine signs with and accepts.
    pub fn algorithm(&self) -> Algorithm {
        self.inner.alg
    }

    /// Lifetime in seconds given to tokens signed without `exp` or `expires_in`.
    pub fn default_expiry(&self) -> u64 {
        self.inner.default_expiry
    }

    /// Signs a copy of `claims`, adding `iat` (now, unless present) and, unless `exp` is present,
    /// `exp = iat + expires_in.unwrap_or(default_expiry)`. Returns the token and the payload
    /// exactly as signed (what the server keeps as the socket's `authToken`).
    pub fn sign(
        &self,
        claims: &Map<String, Value>,
        expires_in: Option<u64>,
    ) -> Result<(String, Map<String, Value>), SignError> {
        for claim in ["iat", "exp", "nbf"] {
            if claims.get(claim).is_some_and(|v| !v.is_number()) {
                return Err(SignError::InvalidClaim(claim));
            }
        }
        let mut payload = claims.clone();
        let iat = match payload.get("iat") {
            Some(Value::Number(iat)) => iat.clone(),
            _ => {
                let now = Number::from(now_secs_int());
                payload.insert("iat".to_owned(), Value::Number(now.clone()));
                now
            }
        };
        if !payload.contains_key("exp") {
            let lifetime = expires_in.unwrap_or(self.inner.default_expiry);
            let exp = add_seconds(&iat, lifetime).ok_or(SignError::InvalidClaim("iat"))?;
            payload.insert("exp".to_owned(), Value::Number(exp));
        }

        let body = serde_json::to_vec(&payload).map_err(SignError::Json)?;
        let mut token = self.inner.encoded_header.clone();
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&body, &mut token);
        // Such a token would only be refused by `verify` later; no point computing a signature.
        if token.len() >= MAX_TOKEN_LEN {
            return Err(SignError::TooLarge(token.len()));
        }
        let signature =
            jsonwebtoken::crypto::sign(token.as_bytes(), &self.inner.encoding, self.inner.alg)
                .map_err(SignError::Crypto)?;
        token.push('.');
        token.push_str(&signature);
        if token.len() > MAX_TOKEN_LEN {
            return Err(SignError::TooLarge(token.len()));
        }
        Ok((token, payload))
    }

    /// [`verify`](Self::verify) for async code: an HMAC token (a hash, cheap) inline; a key-pair
    /// token on the blocking pool, at most [`AuthOptions::verify_concurrency`] at once (the rest
    /// wait their turn), so a flood of RS256 tokens never occupies the runtime's threads.
    pub async fn verify_bounded(&self, token: &str) -> Result<Map<String, Value>, AuthTokenError> {
        if self.inner.alg.family() == AlgorithmFamily::Hmac || token.len() > MAX_TOKEN_LEN {
            return self.verify(token);
        }
        // Owned and moved into the blocking task: if the caller goes away while it runs, the
        // permit is still held until the CPU work ends, so the bound stays true.
        let Ok(permit) = self.inner.permits.clone().acquire_owned().await else {
            // Never closed; answered like a broken signature rather than panicking.
            return Err(AuthTokenError::InvalidSignature);
        };
        let engine = self.clone();
        let token = token.to_owned();
        let run = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            // Unit tests count, and hold each verification a little so that unbounded ones
            // would overlap.
            #[cfg(test)]
            let _count = tests::InFlight::enter(&engine.inner);
            engine.verify(&token)
        });
        // A panic in the verification (none is known) is a refused token, not a crashed socket.
        run.await.unwrap_or(Err(AuthTokenError::InvalidSignature))
    }

    /// Verifies a token received from a client and returns its payload. Never panics, whatever
    /// the input.
    pub fn verify(&self, token: &str) -> Result<Map<String, Value>, AuthTokenError> {
        if token.is_empty() {
            return Err(AuthTokenError::Missing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthTokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthTokenError::Malformed);
        };
        // The reference's shape test: non-empty base64url header and payload, optional signature.
        if header_b64.is_empty()
            || payload_b64.is_empty()
            || ![header_b64, payload_b64, signature]
                .iter()
                .all(|part| part.bytes().all(is_base64url_byte))
        {
            return Err(AuthTokenError::Invalid);
        }
        let Some(Value::Object(header)) = decode_json_part(header_b64) else {
            return Err(AuthTokenError::Invalid);
        };
        let payload = decode_json_part(payload_b64).ok_or(AuthTokenError::Invalid)?;

        // Before the algorithm check, as in the reference: an `alg: none` token has an empty
        // signature and gets this message rather than `invalid algorithm`.
        if signature.is_empty() {
            return Err(AuthTokenError::SignatureRequired);
        }
        // Exactly one algorithm, compared as a string: `none`, other HMAC sizes and HS/RS
        // confusion all stop here, before any key is used.
        if header.get("alg").and_then(Value::as_str) != Some(self.inner.alg_name) {
            return Err(AuthTokenError::InvalidAlgorithm);
        }
        let signed = &token[..header_b64.len() + 1 + payload_b64.len()];
        match jsonwebtoken::crypto::verify(
            signature,
            signed.as_bytes(),
            &self.inner.decoding,
            self.inner.alg,
        ) {
            Ok(true) => {}
            Ok(false) | Err(_) => return Err(AuthTokenError::InvalidSignature),
        }

        let Value::Object(payload) = payload else {
            return Err(AuthTokenError::PayloadNotObject);
        };
        let now = now_secs();
        if let Some(nbf) = payload.get("nbf") {
            let nbf = nbf.as_f64().ok_or(AuthTokenError::InvalidNotBefore)?;
            if nbf > now {
                return Err(AuthTokenError::NotBefore { nbf });
            }
        }
        if let Some(exp) = payload.get("exp") {
            let exp = exp.as_f64().ok_or(AuthTokenError::InvalidExpiry)?;
            if now >= exp {
                return Err(AuthTokenError::Expired { exp });
            }
        }
        Ok(payload)
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
    }
}

/// `openssl ecparam -genkey` writes SEC1 keys, which look right but are not PKCS#8.
fn private_key_hint(pem: &[u8]) -> &'static str {
    let is = |tag: &[u8]| pem.windows(tag.len()).any(|w| w == tag);
    if is(b"BEGIN EC PRIVATE KEY") {
        " (it is a SEC1 `EC PRIVATE KEY`; convert it with `openssl pkcs8 -topk8 -nocrypt`)"
    } else if is(b"ENCRYPTED PRIVATE KEY") {
        " (it is encrypted; export it without a passphrase)"
    } else if is(b"PUBLIC KEY") {
        " (it is a public key)"
    } else {
        ""
    }
}

/// A pair that parses can still be two unrelated keys or the wrong curve; one signature at
/// startup finds out before any client does.
fn check_key_pair(
    alg: Algorithm,
    encoding: &EncodingKey,
    decoding: &DecodingKey,
) -> Result<(), AuthConfigError> {
    const PROBE: &[u8] = b"sc auth key pair check";
    let name = alg_name(alg);
    let signature = jsonwebtoken::crypto::sign(PROBE, encoding, alg)
        .map_err(|_| AuthConfigError::UnusablePrivateKey(name))?;
    match jsonwebtoken::crypto::verify(&signature, PROBE, decoding, alg) {
        Ok(true) => Ok(()),
        Ok(false) | Err(_) => Err(AuthConfigError::KeyMismatch(name)),
    }
}

fn is_base64url_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn decode_json_part(part: &str) -> Option<Value> {
    // Node drops a dangling 4n+1th character instead of failing.
    let part = if part.len() % 4 == 1 {
        &part[..part.len() - 1]
    } else {
        part
    };
    let bytes = B64URL_LENIENT.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `iat + seconds`, kept an integer when it fits (it always does for sane inputs).
fn add_seconds(iat: &Number, seconds: u64) -> Option<Number> {
    if let Some(i) = iat.as_i64() {
        let sum = i128::from(i) + i128::from(seconds);
        if let Ok(v) = i64::try_from(sum) {
            return Some(v.into());
        }
        if let Ok(v) = u64::try_from(sum) {
            return Some(v.into());
        }
    } else if let Some(v) = iat.as_u64().and_then(|u| u.checked_add(seconds)) {
        return Some(v.into());
    }
    Number::from_f64(iat.as_f64()? + seconds as f64)
}

/// Whole seconds since the epoch: the reference compares claims with `Math.floor(Date.now() /
/// 1000)`. A clock before 1970 reads as 0 instead of panicking.
fn now_secs_int() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn now_secs() -> f64 {
    now_secs_int() as f64
}

/// `JSON.stringify(new Date(ms))` for the error fields the reference fills with a `Date`: the
/// ISO-8601 form with milliseconds over the whole JS date range (years beyond 0..=9999 get the
/// `+YYYYYY`/`-YYYYYY` form), `null` outside it.
fn js_date_json(ms: f64) -> Value {
    const MAX_MS: f64 = 8.64e15;
    if !ms.is_finite() || ms.abs() > MAX_MS {
        return Value::Null;
    }
    let ms = ms.trunc() as i64;
    let (days, in_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    let year = if (0..=9999).contains(&year) {
        format!("{year:04}")
    } else if year < 0 {
        format!("-{:06}", -year)
    } else {
        format!("+{year:06}")
    };
    Value::String(format!(
        "{year}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    ))
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (H. Hinnant's
/// algorithm); `time`'s default range stops at year 9999, JS dates do not.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Fills `buf` from the OS generator. sc-core's `rand` dependency is optional (client only),
/// so this reads `/dev/urandom` (what `rand` would use on Unix) directly.
fn fill_random(buf: &mut [u8]) {
    use std::io::Read as _;
    if let Ok(mut urandom) = std::fs::File::open("/dev/urandom") {
        if urandom.read_exact(buf).is_ok() {
            return;
        }
    }
    // No /dev/urandom (Windows): std's hasher keys come from the OS generator, giving a secret
    // with 128 bits of entropy, still far beyond guessing.
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher as _, Hasher as _};
    let state = RandomState::new();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    for (i, chunk) in buf.chunks_mut(8).enumerate() {
        let mut hasher = state.build_hasher();
        hasher.write_usize(i);
        hasher.write_u128(nanos);
        let word = hasher.finish().to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::Ordering::Relaxed;

    const RSA_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQDvqWB5DDsrEuqz
+6JCyJim87C2W+jiQj1nsXHRXtlW3H5X5SlE/V88d2rcE03EZxgZZgO0149LvxNH
vCLsZXosTM9rUT3v6rVQP1VBUhrh4tkbKUpRvKGw9G63geY5nQWesY7n3OZklf3Z
FDkXeB595mKzbNttfrHZYYzkkBj9fPdwBo816YeqSq6Iv3AbXHWT/YywRxP+hPTo
iF+RhczmY3wsA5Z1mZLLoDuMoAgA265AZKMTL3x+uCGJ0ShOWRvD0G1J6ByL+mIJ
wDA2xwOTJhjv5q7uu+2kEKQyE178OL35ci9kjHAs26vOz+3cVitTzKsgCRu3yZor
MsLIhIitAgMBAAECggEADQskCoKCvTXoMIfV+Bowdgmrnkkt9BPUgWO+xOfgyUxH
02MlVga6MQbIz0B9CjRC3gMCLvdPv7jJr6z1c6CUP9FQX/q0dcMe6hwATlqjHD8l
6hywWaF8EARFpawmtQ+u4h5aH5QTX/m/2UQzVUEphlhMb+Umo3TH8Nj70Oa8zXLt
kqiJZSY9d4bFSESfREdnjsjGfSg2FnNzWsBZtN1/zsP8gHc9ta+6HKIfl2xFOiQ+
9Zs1X2IYsR54Q7NDh7o0uicImwYvMluoqeI55mB+ETnM+Lm9bzJSWB45gQQzjsXp
lgyxR78ivTmkeraQHH2k9T8FdAx/O/t5u5M/M+LISwKBgQD6LJmCuf+W18B5CgQO
Y77SsDYshzVoOaf5XviUtpL7WQDmSxXfyVYez8Y/s8oCXPUMLdutWGZRriNt80US
Td9bIMywNKRjoYULxGQlqgu+EG/PhYmEjTg+IkK14hdLEGYXwLcrcufHa3EfiJal
oKfjhKHkq3bGFWYXIBkALvRlDwKBgQD1PhthRQvPFQ5Ip83330H4hkiL1rhF3VKn
w7ftmf3iDYmWJS24zq7QpuRc2BGCsqn9fC8N+FtThKVlnn/827YRhbyX/A04JClm
efoA9fIPzyi5v9FRT1yOBIJGKx1mFyO8/PXF9f3QPYTivAXn3/knmnCYa5qIOS3o
DB5t6TIOgwKBgCbhEYZgc5k0tIPbC6BU3g4ONo0bAjDNbQ5zNPyflx4ayeoAV0jt
GEY3kh7KSSWu3qJi6hX5fAVLo9Ptj5l1orWd1lG4DKgzLOMURWAZGjQSh93faezA
qbH2TxnHJkmTJdqhJ5ZICD9UskLtTkQ1QII6VZKdFxtXrgMACQKfSXn/AoGAN+nn
GDBD1vz3+ry3ixIN2nnTRH66GMOzOqi24KdBaS6o9eCYIhCNbuj+G+TvaRsPAsoz
eD3tpIcTpq2ShLYbNreFHinLYcds4P5ib6GjhNM4d9EyChXMBl0kzpa55zLTZR1P
c8j4C2hbSc6QkiNQjST7EuVFoFVZEBTjQy/tx70CgYAd0bwZ13roDvC9kHl4Wm8p
RmnpFysqFSWoVS9sQqs/hIJOiUzj26nPvXf37N5RkLPAJzwvUHltffpFZyuKxLWg
JIKTLa3412riu9hvMRovqY8etdnLWzevlZASFuS6pcZMHATCYRji7fM6jbNFE7do
GTwJM6iuvPjCBRxy9p6mmg==
-----END PRIVATE KEY-----";
    const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA76lgeQw7KxLqs/uiQsiY
pvOwtlvo4kI9Z7Fx0V7ZVtx+V+UpRP1fPHdq3BNNxGcYGWYDtNePS78TR7wi7GV6
LEzPa1E97+q1UD9VQVIa4eLZGylKUbyhsPRut4HmOZ0FnrGO59zmZJX92RQ5F3ge
feZis2zbbX6x2WGM5JAY/Xz3cAaPNemHqkquiL9wG1x1k/2MsEcT/oT06IhfkYXM
5mN8LAOWdZmSy6A7jKAIANuuQGSjEy98frghidEoTlkbw9BtSegci/piCcAwNscD
kyYY7+au7rvtpBCkMhNe/Di9+XIvZIxwLNurzs/t3FYrU8yrIAkbt8maKzLCyISI
rQIDAQAB
-----END PUBLIC KEY-----";
    const EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg38XbmeHjTizwHX9U
ZF0sMKr6Zfmhz5i891h/AT1dPr2hRANCAASN+TGjiNdIX1orR7lgZlfDNrFpHukI
6DM4faPPrseqcZJLzTyKAr55zG5CzdKFe5hqvWTAgE4RCR6KCGcpty8C
-----END PRIVATE KEY-----";
    const EC_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEjfkxo4jXSF9aK0e5YGZXwzaxaR7p
COgzOH2jz67HqnGSS808igK+ecxuQs3ShXuYar1kwIBOEQkeighnKbcvAg==
-----END PUBLIC KEY-----";
    /// Public half of another P-256 key, to pair wrongly with `EC_PRIVATE`.
    const EC_OTHER_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEbkFYi5ztbCc4LrPBTFA+U0Ynp2uS
a3/F1AqdIcp4tovKuO8Ww+MRS5eoDaX1IaKi+VW9ssDPKpkfNCYj+hpiBA==
-----END PUBLIC KEY-----";
    /// P-384: parses as EC but cannot sign ES256.
    const EC384_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDDmXDtI78WFdva/4hb1
nrJIyGHNh3CY+chdu+CYe78cB5DDQyMldYw+thImkV1ZxH6hZANiAASA6dZ5Maly
Y2JjVwMFmZtU39r4HlQCdasIj/HXR+hpJkS94S+Z9q8EoIFGtKCfPNPauyrWjOuO
Y733r7CCH0EfT0NU8u2HWSDWYvjLLLMLZEKJhCl8RNZWv5T3kimL9iI=
-----END PRIVATE KEY-----";
    /// What `openssl ecparam -genkey` writes (SEC1, not PKCS#8).
    const EC_SEC1_PRIVATE: &str = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIClwGdhH/3hecbqfd/gz6bWmgyHIwHlxzzy/jGfwr1MaoAoGCCqGSM49
AwEHoUQDQgAEms9lvy/zoCeNhFm7vo68dF96t7oFwAU+AZ/2wcP8ejwFG9oHxeEG
o2+SosLEaHARkMpmkyKNFTlCVedc2wD3EQ==
-----END EC PRIVATE KEY-----";
    const ED_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIHVFsi12oiMOX9Jg7CXM5nooo4r4Wpz2Ev3fINgdd9Bi
-----END PRIVATE KEY-----";
    const ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAkNnn+I3qbK4NCU2RgZiuaEBe4H89xXDxdjlaVHQXr2Y=
-----END PUBLIC KEY-----";

    const SECRET: &[u8] = b"a-test-secret";

    fn hs256() -> AuthEngine {
        AuthEngine::new(AuthOptions::new(AuthKey::Secret(SECRET.to_vec()))).expect("HS256 engine")
    }

    fn key_pair(
        alg: Algorithm,
        private: &str,
        public: &str,
    ) -> Result<AuthEngine, AuthConfigError> {
        AuthEngine::new(AuthOptions {
            key: AuthKey::KeyPair {
                private_pem: private.as_bytes().to_vec(),
                public_pem: public.as_bytes().to_vec(),
            },
            algorithm: Some(alg),
            ..AuthOptions::new(AuthKey::Secret(Vec::new()))
        })
    }

    fn obj(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn now() -> i64 {
        i64::try_from(now_secs_int()).expect("now fits i64")
    }

    fn b64(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    /// A token with any header and payload, signed with `alg` and a raw HMAC `secret`.
    fn forge_hmac(header: &Value, payload: &Value, alg: Algorithm, secret: &[u8]) -> String {
        let message = format!("{}.{}", b64(header), b64(payload));
        let key = EncodingKey::from_secret(secret);
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &key, alg).expect("sign forged token");
        format!("{message}.{signature}")
    }

    fn hs256_token(payload: &Value) -> String {
        forge_hmac(
            &json!({"alg":"HS256","typ":"JWT"}),
            payload,
            Algorithm::HS256,
            SECRET,
        )
    }

    fn wire(err: AuthTokenError) -> Value {
        serde_json::to_value(ScError::from(err)).expect("serialise ScError")
    }

    fn invalid(message: &str) -> Value {
        json!({"message": message, "name": "AuthTokenInvalidError", "isBadToken": true})
    }

    /// ISO string of a Unix time, computed with `time` so it checks `js_date_json` independently.
    fn iso(secs: i64) -> String {
        let dt = time::OffsetDateTime::from_unix_timestamp(secs).expect("timestamp in range");
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.000Z",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second()
        )
    }

    #[test]
    fn hs256_round_trip() {
        let engine = hs256();
        let claims = obj(json!({"username": "alice", "roles": ["admin"], "n": 1.5}));
        let (token, signed) = engine.sign(&claims, None).expect("sign");
        assert_eq!(token.split('.').count(), 3);
        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').next().expect("header"))
                .expect("base64"),
        )
        .expect("json");
        assert_eq!(header, json!({"alg": "HS256", "typ": "JWT"}));
        assert_eq!(engine.verify(&token).expect("verify"), signed);
        assert_eq!(signed["username"], "alice");
        assert_eq!(signed["roles"], json!(["admin"]));
    }

    #[test]
    fn sign_sets_iat_and_default_expiry() {
        let before = now();
        let (_, signed) = hs256().sign(&obj(json!({"u": 1})), None).expect("sign");
        let iat = signed["iat"].as_i64().expect("integer iat");
        assert!(iat >= before && iat <= now());
        assert_eq!(signed["exp"].as_i64(), Some(iat + 86_400));

        let engine = AuthEngine::new(AuthOptions {
            default_expiry: 120,
            ..AuthOptions::new(AuthKey::Secret(SECRET.to_vec()))
        })
        .expect("engine");
        assert_eq!(engine.default_expiry(), 120);
        let (_, signed) = engine.sign(&Map::new(), None).expect("sign");
        assert_eq!(
            signed["exp"].as_i64(),
            Some(signed["iat"].as_i64().expect("iat") + 120)
        );
    }

    #[test]
    fn sign_keeps_explicit_exp_and_iat() {
        let exp = now() + 5;
        let (token, signed) = hs256()
            .sign(&obj(json!({"exp": exp})), Some(1000))
            .expect("sign");
        assert_eq!(signed["exp"], json!(exp));
        assert!(signed["iat"].is_number());
        assert_eq!(hs256().verify(&token).expect("verify")["exp"], json!(exp));

        // An existing iat is kept and the expiry counts from it, as `jsonwebtoken.sign` does.
        let iat = now() - 100;
        let (_, signed) = hs256()
            .sign(&obj(json!({"iat": iat})), Some(1000))
            .expect("sign");
        assert_eq!(signed["iat"], json!(iat));
        assert_eq!(signed["exp"], json!(iat + 1000));
    }

    #[test]
    fn expires_in_overrides_default() {
        let (token, signed) = hs256().sign(&Map::new(), Some(30)).expect("sign");
        assert_eq!(
            signed["exp"].as_i64(),
            Some(signed["iat"].as_i64().expect("iat") + 30)
        );
        hs256().verify(&token).expect("still valid");
    }

    #[test]
    fn sign_rejects_non_numeric_time_claims() {
        for claim in ["iat", "exp", "nbf"] {
            let claims = obj(json!({ claim: "soon" }));
            match hs256().sign(&claims, None) {
                Err(SignError::InvalidClaim(c)) => assert_eq!(c, claim),
                other => panic!("{claim}: {other:?}"),
            }
        }
        let claims = obj(json!({"exp": null}));
        assert!(matches!(
            hs256().sign(&claims, None),
            Err(SignError::InvalidClaim("exp"))
        ));
    }

    #[test]
    fn sign_refuses_tokens_verify_would_refuse() {
        let claims = obj(json!({"blob": "x".repeat(MAX_TOKEN_LEN)}));
        assert!(matches!(
            hs256().sign(&claims, None),
            Err(SignError::TooLarge(_))
        ));
    }

    #[test]
    fn malformed_tokens() {
        let engine = hs256();
        for token in ["abc", "a.b", "a.b.c.d", "...."] {
            assert_eq!(
                engine.verify(token),
                Err(AuthTokenError::Malformed),
                "{token}"
            );
        }
        assert_eq!(wire(AuthTokenError::Malformed), invalid("jwt malformed"));
        assert_eq!(engine.verify(""), Err(AuthTokenError::Missing));
        assert_eq!(
            wire(AuthTokenError::Missing),
            invalid("jwt must be provided")
        );
    }

    #[test]
    fn oversized_token_is_malformed() {
        let (token, _) = hs256().sign(&Map::new(), None).expect("sign");
        let huge = format!("{token}{}", "A".repeat(MAX_TOKEN_LEN));
        assert_eq!(hs256().verify(&huge), Err(AuthTokenError::Malformed));
        let huge = "a.".repeat(MAX_TOKEN_LEN);
        assert_eq!(hs256().verify(&huge), Err(AuthTokenError::Malformed));
    }

    #[test]
    fn undecodable_tokens_are_invalid() {
        let engine = hs256();
        let good_header = b64(&json!({"alg": "HS256", "typ": "JWT"}));
        let good_payload = b64(&json!({"u": 1}));
        let cases = [
            "a.b.c".to_owned(),
            "garbage.token.here".to_owned(),
            format!(".{good_payload}.sig"),
            format!("{good_header}..sig"),
            format!("{good_header}.{good_payload}.s+g"),
            format!("{good_header}.not json.sig"),
            format!("{}.{good_payload}.sig", b64(&json!([1, 2]))),
            format!("{good_header}.{}.sig", URL_SAFE_NO_PAD.encode("{nope")),
        ];
        for token in &cases {
            assert_eq!(
                engine.verify(token),
                Err(AuthTokenError::Invalid),
                "{token}"
            );
        }
        let err = engine.verify("a.b.c").expect_err("invalid");
        assert_eq!(wire(err), invalid("invalid token"));
    }

    #[test]
    fn alg_none_and_empty_signatures_are_refused() {
        let engine = hs256();
        let payload = b64(&json!({"username": "admin"}));
        for alg in ["none", "None", "NONE", "HS256"] {
            let token = format!("{}.{payload}.", b64(&json!({"alg": alg, "typ": "JWT"})));
            let err = engine.verify(&token).expect_err(alg);
            assert_eq!(err, AuthTokenError::SignatureRequired, "{alg}");
            assert_eq!(wire(err), invalid("jwt signature is required"));
        }
        // With some signature bytes, `none` is just an algorithm this server does not accept.
        let token = format!("{}.{payload}.c2ln", b64(&json!({"alg": "none"})));
        assert_eq!(engine.verify(&token), Err(AuthTokenError::InvalidAlgorithm));
    }

    #[test]
    fn other_algorithms_are_refused() {
        let payload = json!({"username": "alice"});
        let hs512 = forge_hmac(
            &json!({"alg": "HS512", "typ": "JWT"}),
            &payload,
            Algorithm::HS512,
            SECRET,
        );
        let err = hs256().verify(&hs512).expect_err("HS512 on HS256");
        assert_eq!(wire(err), invalid("invalid algorithm"));
        // The header's alg is compared exactly.
        let lower = forge_hmac(&json!({"alg": "hs256"}), &payload, Algorithm::HS256, SECRET);
        assert_eq!(
            hs256().verify(&lower),
            Err(AuthTokenError::InvalidAlgorithm)
        );
        let missing = forge_hmac(&json!({"typ": "JWT"}), &payload, Algorithm::HS256, SECRET);
        assert_eq!(
            hs256().verify(&missing),
            Err(AuthTokenError::InvalidAlgorithm)
        );
        let numeric = forge_hmac(&json!({"alg": 256}), &payload, Algorithm::HS256, SECRET);
        assert_eq!(
            hs256().verify(&numeric),
            Err(AuthTokenError::InvalidAlgorithm)
        );
    }

    #[test]
    fn tampered_payload_is_refused() {
        let engine = hs256();
        let (token, _) = engine
            .sign(&obj(json!({"username": "alice"})), None)
            .expect("sign");
        let mut parts: Vec<&str> = token.split('.').collect();
        let evil = b64(&json!({"username": "admin"}));
        parts[1] = &evil;
        let err = engine.verify(&parts.join(".")).expect_err("tampered");
        assert_eq!(wire(err), invalid("invalid signature"));
        // A signature that is not even the right length/encoding is just a bad signature.
        let truncated = &token[..token.len() - 3];
        assert_eq!(
            engine.verify(truncated),
            Err(AuthTokenError::InvalidSignature)
        );
    }

    #[test]
    fn token_from_another_secret_is_refused() {
        let other = AuthEngine::new(AuthOptions::new(AuthKey::Secret(b"another".to_vec())))
            .expect("engine");
        let (token, _) = other.sign(&Map::new(), None).expect("sign");
        assert_eq!(
            hs256().verify(&token),
            Err(AuthTokenError::InvalidSignature)
        );
    }

    #[test]
    fn expired_token() {
        let exp = now() - 10;
        let err = hs256()
            .verify(&hs256_token(&json!({"exp": exp})))
            .expect_err("expired");
        assert_eq!(err, AuthTokenError::Expired { exp: exp as f64 });
        assert_eq!(
            wire(err),
            json!({
                "message": "jwt expired",
                "name": "AuthTokenExpiredError",
                "expiry": iso(exp),
                "isBadToken": true
            })
        );
        // No leeway: a token expiring this second is already expired.
        let token = hs256_token(&json!({"exp": now()}));
        assert!(matches!(
            hs256().verify(&token),
            Err(AuthTokenError::Expired { .. })
        ));
        // A token signed with a zero lifetime is expired from the start.
        let (token, _) = hs256().sign(&Map::new(), Some(0)).expect("sign");
        assert!(matches!(
            hs256().verify(&token),
            Err(AuthTokenError::Expired { .. })
        ));
    }

    #[test]
    fn expiry_string_matches_the_reference_example() {
        let err = AuthTokenError::Expired {
            exp: 1_795_639_673.0,
        };
        assert_eq!(wire(err)["expiry"], "2026-11-25T20:47:53.000Z");
    }

    #[test]
    fn token_without_exp_is_valid() {
        let payload = hs256()
            .verify(&hs256_token(&json!({"u": 1})))
            .expect("no exp is fine");
        assert_eq!(payload, obj(json!({"u": 1})));
    }

    #[test]
    fn not_yet_active_token() {
        let nbf = now() + 100;
        let err = hs256()
            .verify(&hs256_token(&json!({"nbf": nbf, "exp": nbf + 100})))
            .expect_err("not active");
        assert_eq!(
            wire(err),
            json!({
                "message": "jwt not active",
                "name": "AuthTokenNotBeforeError",
                "date": iso(nbf),
                "isBadToken": false
            })
        );
        // nbf is checked before exp, as in the reference.
        let token = hs256_token(&json!({"nbf": nbf, "exp": 1}));
        assert!(matches!(
            hs256().verify(&token),
            Err(AuthTokenError::NotBefore { .. })
        ));
        let token = hs256_token(&json!({"nbf": now()}));
        hs256().verify(&token).expect("nbf == now is active");
    }

    #[test]
    fn other_failures() {
        let engine = hs256();
        let err = engine
            .verify(&hs256_token(&json!([1, 2, 3])))
            .expect_err("array payload");
        assert_eq!(err, AuthTokenError::PayloadNotObject);
        assert_eq!(
            wire(err),
            json!({"message": "jwt payload must be a JSON object", "name": "AuthTokenError", "isBadToken": true})
        );
        // Non-numeric time claims are JsonWebTokenErrors in the reference, hence "Invalid".
        let err = engine
            .verify(&hs256_token(&json!({"exp": "tomorrow"})))
            .expect_err("exp");
        assert_eq!(wire(err), invalid("invalid exp value"));
        let err = engine
            .verify(&hs256_token(&json!({"nbf": null})))
            .expect_err("nbf");
        assert_eq!(wire(err), invalid("invalid nbf value"));
    }

    #[test]
    fn rs256_round_trip() {
        let engine = key_pair(Algorithm::RS256, RSA_PRIVATE, RSA_PUBLIC).expect("RS256 engine");
        let (token, signed) = engine
            .sign(&obj(json!({"u": "rsa"})), Some(60))
            .expect("sign");
        assert_eq!(engine.verify(&token).expect("verify"), signed);
        let mut tampered = token.clone();
        tampered.insert(token.find('.').expect("dot") + 1, 'e');
        assert!(engine.verify(&tampered).is_err());
    }

    /// One verification counted in [`Inner::in_flight`] while it lives.
    pub(super) struct InFlight<'a>(&'a Inner);

    impl<'a> InFlight<'a> {
        pub(super) fn enter(inner: &'a Inner) -> Self {
            let now = inner.in_flight.fetch_add(1, Relaxed) + 1;
            inner.peak.fetch_max(now, Relaxed);
            std::thread::sleep(std::time::Duration::from_millis(10));
            Self(inner)
        }
    }

    impl Drop for InFlight<'_> {
        fn drop(&mut self) {
            self.0.in_flight.fetch_sub(1, Relaxed);
        }
    }

    /// Verifies `n` RS256 tokens at once with a bound of `bound`; returns the most that ran at
    /// once.
    async fn peak_of_concurrent_verifications(bound: usize, n: usize) -> usize {
        let engine = AuthEngine::new(AuthOptions {
            key: AuthKey::KeyPair {
                private_pem: RSA_PRIVATE.into(),
                public_pem: RSA_PUBLIC.into(),
            },
            algorithm: Some(Algorithm::RS256),
            verify_concurrency: bound,
            ..AuthOptions::new(AuthKey::Secret(Vec::new()))
        })
        .expect("RS256 engine");
        let (token, _) = engine.sign(&obj(json!({"u": 1})), None).expect("sign");
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let (engine, token) = (engine.clone(), token.clone());
                tokio::spawn(async move { engine.verify_bounded(&token).await })
            })
            .collect();
        for task in tasks {
            task.await.expect("task").expect("valid token");
        }
        assert_eq!(engine.inner.in_flight.load(Relaxed), 0);
        engine.inner.peak.load(Relaxed)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn key_pair_verifications_are_bounded() {
        assert_eq!(peak_of_concurrent_verifications(2, 16).await, 2);
        // The measure is real: with room for them, more run at once.
        assert!(peak_of_concurrent_verifications(16, 16).await > 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn hmac_verifications_stay_inline() {
        let engine = hs256();
        let token = hs256_token(&json!({"u": 1}));
        // On a current-thread runtime nothing else runs: no blocking task, no permit taken.
        assert!(engine.verify_bounded(&token).await.is_ok());
        assert_eq!(engine.inner.peak.load(Relaxed), 0);
    }

    #[test]
    fn es256_round_trip() {
        let engine = key_pair(Algorithm::ES256, EC_PRIVATE, EC_PUBLIC).expect("ES256 engine");
        let (token, signed) = engine.sign(&obj(json!({"u": "ec"})), None).expect("sign");
        assert_eq!(engine.verify(&token).expect("verify"), signed);
        // An HS256 engine does not accept it, and the ES256 engine refuses HS256 tokens.
        assert_eq!(
            hs256().verify(&token),
            Err(AuthTokenError::InvalidAlgorithm)
        );
        let (hs, _) = hs256().sign(&Map::new(), None).expect("sign");
        assert_eq!(engine.verify(&hs), Err(AuthTokenError::InvalidAlgorithm));
    }

    #[test]
    fn eddsa_round_trip() {
        let engine = key_pair(Algorithm::EdDSA, ED_PRIVATE, ED_PUBLIC).expect("EdDSA engine");
        let (token, signed) = engine.sign(&obj(json!({"u": "ed"})), None).expect("sign");
        assert_eq!(engine.verify(&token).expect("verify"), signed);
    }

    #[test]
    fn algorithm_confusion_is_refused() {
        let engine = key_pair(Algorithm::RS256, RSA_PRIVATE, RSA_PUBLIC).expect("RS256 engine");
        let forged = forge_hmac(
            &json!({"alg": "HS256", "typ": "JWT"}),
            &json!({"username": "admin"}),
            Algorithm::HS256,
            RSA_PUBLIC.as_bytes(),
        );
        let err = engine
            .verify(&forged)
            .expect_err("HS256 signed with the public key");
        assert_eq!(wire(err), invalid("invalid algorithm"));
        // Even claiming RS256 in the header, an HMAC signature does not verify.
        let forged = forge_hmac(
            &json!({"alg": "RS256", "typ": "JWT"}),
            &json!({"username": "admin"}),
            Algorithm::HS256,
            RSA_PUBLIC.as_bytes(),
        );
        assert_eq!(
            engine.verify(&forged),
            Err(AuthTokenError::InvalidSignature)
        );
    }

    #[test]
    fn config_errors() {
        use AuthConfigError as E;
        let secret = |alg| {
            AuthEngine::new(AuthOptions {
                algorithm: Some(alg),
                ..AuthOptions::new(AuthKey::Secret(SECRET.to_vec()))
            })
            .map(|_| ())
        };
        assert_eq!(
            AuthEngine::new(AuthOptions::new(AuthKey::Secret(Vec::new()))).map(|_| ()),
            Err(E::EmptySecret)
        );
        assert_eq!(
            secret(Algorithm::RS256),
            Err(E::SecretWithAsymmetricAlgorithm("RS256"))
        );
        assert_eq!(
            secret(Algorithm::ES256),
            Err(E::SecretWithAsymmetricAlgorithm("ES256"))
        );
        assert_eq!(secret(Algorithm::HS512), Ok(()));

        let pair = |alg, private, public| key_pair(alg, private, public).map(|_| ());
        assert_eq!(
            pair(Algorithm::HS256, RSA_PRIVATE, RSA_PUBLIC),
            Err(E::KeyPairWithHmacAlgorithm("HS256"))
        );
        let no_alg = AuthEngine::new(AuthOptions::new(AuthKey::KeyPair {
            private_pem: RSA_PRIVATE.into(),
            public_pem: RSA_PUBLIC.into(),
        }));
        assert_eq!(no_alg.map(|_| ()), Err(E::MissingAlgorithm));
        assert!(matches!(
            pair(Algorithm::RS256, "not a pem", RSA_PUBLIC),
            Err(E::InvalidPrivateKey { alg: "RS256", .. })
        ));
        assert!(matches!(
            pair(Algorithm::RS256, RSA_PRIVATE, EC_PUBLIC),
            Err(E::InvalidPublicKey { alg: "RS256", .. })
        ));
        assert!(matches!(
            pair(Algorithm::RS256, EC_PRIVATE, RSA_PUBLIC),
            Err(E::InvalidPrivateKey { .. })
        ));
        match pair(Algorithm::ES256, EC_SEC1_PRIVATE, EC_PUBLIC) {
            Err(e @ E::InvalidPrivateKey { .. }) => {
                assert!(e.to_string().contains("openssl pkcs8 -topk8"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            pair(Algorithm::ES256, EC_PRIVATE, EC_OTHER_PUBLIC),
            Err(E::KeyMismatch("ES256"))
        );
        assert_eq!(
            pair(Algorithm::ES256, EC384_PRIVATE, EC_PUBLIC),
            Err(E::UnusablePrivateKey("ES256"))
        );
        assert!(pair(Algorithm::ES384, EC384_PRIVATE, EC_PUBLIC).is_err());
        assert!(pair(Algorithm::EdDSA, ED_PRIVATE, EC_PUBLIC).is_err());
    }

    #[test]
    fn random_secret_is_64_hex_chars() {
        let AuthKey::Secret(a) = AuthEngine::random_secret() else {
            panic!("not a secret");
        };
        let AuthKey::Secret(b) = AuthEngine::random_secret() else {
            panic!("not a secret");
        };
        assert_eq!(a.len(), 64);
        assert!(a
            .iter()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
        AuthEngine::new(AuthOptions::default()).expect("default options are valid");
    }

    #[test]
    fn debug_never_shows_keys() {
        let engine = hs256();
        let shown = format!(
            "{engine:?} {:?}",
            AuthOptions::new(AuthKey::Secret(SECRET.to_vec()))
        );
        assert!(!shown.contains("a-test-secret"), "{shown}");
        assert!(shown.contains("HS256"), "{shown}");
        let pair = AuthKey::KeyPair {
            private_pem: RSA_PRIVATE.into(),
            public_pem: RSA_PUBLIC.into(),
        };
        assert!(!format!("{pair:?}").contains("BEGIN"));
    }

    #[test]
    fn session_expiry_error_and_is_expired() {
        assert_eq!(
            serde_json::to_value(session_expired_error(1_700_000_000)).expect("json"),
            json!({
                "message": "The socket auth token has expired",
                "name": "AuthTokenExpiredError",
                "expiry": 1_700_000_000
            })
        );
        assert!(is_expired(&obj(json!({"exp": now()}))));
        assert!(is_expired(&obj(json!({"exp": 1.5}))));
        assert!(!is_expired(&obj(json!({"exp": now() + 60}))));
        assert!(!is_expired(&obj(json!({"exp": "0"}))));
        assert!(!is_expired(&Map::new()));
    }

    #[test]
    fn js_dates_match_to_iso_string() {
        let cases = [
            (0.0, json!("1970-01-01T00:00:00.000Z")),
            (1.9, json!("1970-01-01T00:00:00.001Z")),
            (-1.0, json!("1969-12-31T23:59:59.999Z")),
            (951_782_400_000.0, json!("2000-02-29T00:00:00.000Z")),
            (1_795_639_673_123.0, json!("2026-11-25T20:47:53.123Z")),
            (253_402_300_799_999.0, json!("9999-12-31T23:59:59.999Z")),
            (253_402_300_800_000.0, json!("+010000-01-01T00:00:00.000Z")),
            (-62_167_219_200_000.0, json!("0000-01-01T00:00:00.000Z")),
            (-62_198_755_200_000.0, json!("-000001-01-01T00:00:00.000Z")),
            (8.64e15, json!("+275760-09-13T00:00:00.000Z")),
            (-8.64e15, json!("-271821-04-20T00:00:00.000Z")),
            (8.64e15 + 1.0, Value::Null),
            (f64::NAN, Value::Null),
            (f64::INFINITY, Value::Null),
        ];
        for (ms, expected) in cases {
            assert_eq!(js_date_json(ms), expected, "{ms}");
        }
        // And against `time` over a spread of ordinary instants.
        for secs in (-5_000_000_000i64..=250_000_000_000).step_by(7_777_777_777) {
            assert_eq!(
                js_date_json(secs as f64 * 1000.0),
                json!(iso(secs)),
                "{secs}"
            );
        }
    }

    #[test]
    fn hostile_inputs_never_panic() {
        let engine = key_pair(Algorithm::ES256, EC_PRIVATE, EC_PUBLIC).expect("engine");
        let (token, _) = engine.sign(&obj(json!({"u": 1})), None).expect("sign");
        let mut inputs = vec![
            ".".to_owned(),
            "..".to_owned(),
            "\u{0}.\u{0}.\u{0}".to_owned(),
            "é.é.é".to_owned(),
            format!("{}.e30.AAAA", b64(&json!({"alg": "ES256"}))),
            format!("{}.e30.{}", b64(&json!({"alg": "ES256"})), "A".repeat(200)),
        ];
        for cut in 0..token.len() {
            inputs.push(token[..cut].to_owned());
            let mut flipped = token.clone().into_bytes();
            flipped[cut] = if flipped[cut] == b'A' { b'B' } else { b'A' };
            inputs.push(String::from_utf8(flipped).expect("ascii"));
        }
        for input in &inputs {
            if input != &token {
                assert!(engine.verify(input).is_err(), "{input}");
            }
        }
    }
}
