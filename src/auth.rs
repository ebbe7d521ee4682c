//! Tokens: issuing and verifying the signed, expiring tokens that
//! `POST /api/account/token` hands out and `Login` presents.
//!
//! A token is `base64url(payload) "." base64url(hmac_sha256(app_secret, payload))`
//! where payload is `v1:{app_id}:{uuid}:{expires_ms}:{account}`. It names its app, so a
//! token of another app fails against that app's secret; it carries its expiry, so no
//! store lookup is needed to check it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub app_id: u64,
    pub uuid: u64,
    pub account: String,
    pub expires_ms: u64,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("malformed token")]
    Malformed,
    #[error("token names an unknown app")]
    UnknownApp,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token expired")]
    Expired,
}

/// Signs `claims` with the app's secret.
pub fn issue(app_secret: &str, claims: &Claims) -> String {
    let payload = format!(
        "v1:{}:{}:{}:{}",
        claims.app_id, claims.uuid, claims.expires_ms, claims.account
    );
    let mut mac = mac(app_secret);
    mac.update(payload.as_bytes());
    let sig = mac.finalize().into_bytes();
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(payload.as_bytes()),
        URL_SAFE_NO_PAD.encode(sig)
    )
}

/// A token whose structure is valid but whose signature is not yet checked.
#[derive(Debug)]
pub struct Unverified {
    claims: Claims,
    payload: Vec<u8>,
    sig: Vec<u8>,
}

impl Unverified {
    /// The app the token claims to belong to (look up its secret with this).
    pub fn app_id(&self) -> u64 {
        self.claims.app_id
    }

    /// The user the token claims to be for.
    pub fn uuid(&self) -> u64 {
        self.claims.uuid
    }

    /// Checks the signature with the app's secret, then expiry at `now_ms`.
    pub fn verify(self, app_secret: &str, now_ms: u64) -> Result<Claims, AuthError> {
        self.signed_with(app_secret)?;
        if now_ms >= self.claims.expires_ms {
            return Err(AuthError::Expired);
        }
        Ok(self.claims)
    }

    fn signed_with(&self, secret: &str) -> Result<(), AuthError> {
        let mut mac = mac(secret);
        mac.update(&self.payload);
        mac.verify_slice(&self.sig)
            .map_err(|_| AuthError::BadSignature)
    }

    /// Checks the token against its app: signed with the current secret, or with
    /// the secret before the last rotation if the token expires before that
    /// secret's grace ends (`previous_secret_until_ms`) and the grace has not
    /// ended; then expiry at `now_ms`.
    pub fn verify_for(self, app: &crate::store::App, now_ms: u64) -> Result<Claims, AuthError> {
        self.check_for(app, now_ms)?;
        Ok(self.claims)
    }

    /// [`Unverified::verify_for`] without consuming the token: the secret that
    /// signed it (whose user keys go with it).
    pub fn check_for<'a>(
        &self,
        app: &'a crate::store::App,
        now_ms: u64,
    ) -> Result<&'a str, AuthError> {
        let secret = if self.signed_with(&app.app_secret).is_ok() {
            app.app_secret.as_str()
        } else {
            let until = app.previous_secret_until_ms;
            app.previous_secret
                .as_deref()
                .filter(|old| {
                    now_ms < until
                        && self.claims.expires_ms <= until
                        && self.signed_with(old).is_ok()
                })
                .ok_or(AuthError::BadSignature)?
        };
        if now_ms >= self.claims.expires_ms {
            return Err(AuthError::Expired);
        }
        Ok(secret)
    }
}

/// Parses a token's structure.
pub fn parse(token: &str) -> Result<Unverified, AuthError> {
    let (payload_b64, sig_b64) = token.split_once('.').ok_or(AuthError::Malformed)?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| AuthError::Malformed)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig_b64)
        .map_err(|_| AuthError::Malformed)?;
    let text = std::str::from_utf8(&payload).map_err(|_| AuthError::Malformed)?;
    let mut parts = text.splitn(5, ':');
    let (Some("v1"), Some(app), Some(uuid), Some(exp), Some(account)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(AuthError::Malformed);
    };
    let claims = Claims {
        app_id: app.parse().map_err(|_| AuthError::Malformed)?,
        uuid: uuid.parse().map_err(|_| AuthError::Malformed)?,
        expires_ms: exp.parse().map_err(|_| AuthError::Malformed)?,
        account: account.to_owned(),
    };
    Ok(Unverified {
        claims,
        payload,
        sig,
    })
}

/// Checks a token: structure, then the signature with the secret of the app it
/// names (`secret_of`), then expiry at `now_ms`.
pub fn verify(
    token: &str,
    now_ms: u64,
    secret_of: impl FnOnce(u64) -> Option<String>,
) -> Result<Claims, AuthError> {
    let unverified = parse(token)?;
    let secret = secret_of(unverified.app_id()).ok_or(AuthError::UnknownApp)?;
    unverified.verify(&secret, now_ms)
}

/// A per-user key derived from the app secret (`miUserSecurityKey`): clients get
/// this instead of the app secret itself, which would let them mint tokens.
pub fn user_security_key(app_secret: &str, uuid: u64) -> String {
    let mut mac = mac(app_secret);
    mac.update(format!("user-security-key:{uuid}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(&mac.finalize().into_bytes()[..18])
}

fn mac(secret: &str) -> HmacSha256 {
    // HMAC accepts keys of any length.
    match HmacSha256::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_before_a_rotation_verifies_tokens_during_the_grace_only() {
        let app = |secret: &str, previous: Option<&str>, until: u64| crate::store::App {
            app_id: 42,
            name: String::new(),
            app_key: String::new(),
            app_secret: secret.into(),
            created_ms: 0,
            previous_secret: previous.map(str::to_owned),
            previous_secret_until_ms: until,
        };
        let old_token = issue("old", &claims());
        let check = |a: &crate::store::App, now| parse(&old_token).unwrap().verify_for(a, now);
        // Rotated, grace until 2000: the old token (expiring at 1000) works before then.
        assert!(check(&app("new", Some("old"), 2_000), 500).is_ok());
        // Grace over, or a token outliving the grace, or rotated twice: refused.
        assert_eq!(
            check(&app("new", Some("old"), 400), 500),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            check(&app("new", Some("old"), 900), 500),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            check(&app("newer", Some("new"), 2_000), 500),
            Err(AuthError::BadSignature)
        );
        // Expiry still applies.
        assert_eq!(
            check(&app("new", Some("old"), 2_000), 1_500),
            Err(AuthError::Expired)
        );
    }

    fn claims() -> Claims {
        Claims {
            app_id: 42,
            uuid: 7,
            account: "13800000001:with:colons".into(),
            expires_ms: 1_000,
        }
    }

    #[test]
    fn issued_token_verifies() {
        let t = issue("s3cret", &claims());
        assert_eq!(verify(&t, 999, |_| Some("s3cret".into())), Ok(claims()));
    }

    #[test]
    fn expired_wrong_secret_unknown_app_and_garbage_are_refused() {
        let t = issue("s3cret", &claims());
        assert_eq!(
            verify(&t, 1_000, |_| Some("s3cret".into())),
            Err(AuthError::Expired)
        );
        assert_eq!(
            verify(&t, 0, |_| Some("other".into())),
            Err(AuthError::BadSignature)
        );
        assert_eq!(verify(&t, 0, |_| None), Err(AuthError::UnknownApp));
        assert_eq!(verify("nonsense", 0, |_| None), Err(AuthError::Malformed));
        assert_eq!(verify("a.b", 0, |_| None), Err(AuthError::Malformed));
    }

    #[test]
    fn tampered_payload_is_refused() {
        let t = issue("s3cret", &claims());
        let (_, sig) = t.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode("v1:42:8:1000:13800000001:with:colons");
        assert_eq!(
            verify(&format!("{forged}.{sig}"), 0, |_| Some("s3cret".into())),
            Err(AuthError::BadSignature)
        );
    }
}
