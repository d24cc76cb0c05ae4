//! Secrets Herald issues and checks: tokens (the admin token, API keys), and the form of a
//! webhook secret.
//!
//! Invariants: a token is shown once, when it is issued, and only its SHA-256 is stored;
//! comparisons run in constant time. Tokens carry 256 bits of randomness, so a plain hash
//! (no salt, no stretching) cannot be reversed or brute-forced.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of admin tokens, so a leaked one is recognisable.
pub const ADMIN_TOKEN_PREFIX: &str = "hadm_";

/// A fresh admin token: the prefix and 32 random bytes in URL-safe base64.
pub fn generate_admin_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    use base64::Engine;
    format!("{ADMIN_TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `presented` hashes to `stored`, in time independent of where they differ.
pub fn token_matches(presented: &str, stored: &[u8; 32]) -> bool {
    hash_token(presented).ct_eq(stored).into()
}

/// Whether `secret` is `whsec_` followed by canonical standard base64 of a non-empty key.
pub fn is_standard_form(secret: &str) -> bool {
    secret
        .strip_prefix("whsec_")
        .and_then(|b64| {
            {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.decode(b64)
            }
            .ok()
        })
        .is_some_and(|key| !key.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_unique_and_verify_only_themselves() {
        let a = generate_admin_token();
        let b = generate_admin_token();
        assert_ne!(a, b);
        assert!(a.starts_with(ADMIN_TOKEN_PREFIX) && a.len() > 40);
        let stored = hash_token(&a);
        assert!(token_matches(&a, &stored));
        assert!(!token_matches(&b, &stored));
        assert!(!token_matches("", &stored));
    }
}
