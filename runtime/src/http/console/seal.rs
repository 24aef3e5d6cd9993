//! Sealed cookies: a value the browser keeps but can neither read nor forge. AES-256-GCM under the
//! console's session key, a fresh random nonce per cookie, and the cookie's name as associated data
//! (a sealed sign-in cookie is never accepted as a session, nor the reverse). The browser sees
//! base64url of nonce and ciphertext: nothing it holds looks like a token.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The AEAD key from its 64 hex digits (checked at startup).
fn key(session_key: &SecretString) -> Option<LessSafeKey> {
    let hex = session_key.expose_secret().as_bytes();
    let mut raw = zeroize::Zeroizing::new([0u8; 32]);
    for (i, pair) in hex.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        *raw.get_mut(i)? = u8::from_str_radix(text, 16).ok()?;
    }
    UnboundKey::new(&AES_256_GCM, raw.as_ref())
        .ok()
        .map(LessSafeKey::new)
}

/// `value` sealed for the cookie `name`.
pub fn seal<T: Serialize>(session_key: &SecretString, name: &str, value: &T) -> Option<String> {
    let key = key(session_key)?;
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).ok()?;
    let mut data = serde_json::to_vec(value).ok()?;
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(name.as_bytes()),
        &mut data,
    )
    .ok()?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&data);
    Some(URL_SAFE_NO_PAD.encode(out))
}

/// The value sealed in `text` for the cookie `name`; `None` if it was not sealed with this key
/// for this name, or was changed.
pub fn open<T: DeserializeOwned>(session_key: &SecretString, name: &str, text: &str) -> Option<T> {
    if text.len() > 8192 {
        return None;
    }
    let key = key(session_key)?;
    let mut raw = URL_SAFE_NO_PAD.decode(text).ok()?;
    if raw.len() < NONCE_LEN {
        return None;
    }
    let mut body = raw.split_off(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(&raw).ok()?;
    let plain = key
        .open_in_place(nonce, Aad::from(name.as_bytes()), &mut body)
        .ok()?;
    serde_json::from_slice(plain).ok()
}

/// `n` random bytes as base64url (state, nonce, PKCE verifier, CSRF token); `None` if the
/// system's random number generator fails (an all-zero value would be guessable).
pub fn random_token(n: usize) -> Option<String> {
    let mut bytes = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

/// The PKCE S256 challenge of `verifier` (RFC 7636 section 4.2).
pub fn s256(verifier: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// Whether two secrets are equal, in time independent of where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(c: char) -> SecretString {
        SecretString::from(std::iter::repeat_n(c, 64).collect::<String>())
    }

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_name_and_unchanged() {
        let sealed = seal(&k('a'), "session", &"the value").unwrap();
        assert_eq!(
            open::<String>(&k('a'), "session", &sealed).as_deref(),
            Some("the value")
        );
        assert!(!sealed.contains("the value"));
        assert_eq!(
            open::<String>(&k('b'), "session", &sealed),
            None,
            "other key"
        );
        assert_eq!(
            open::<String>(&k('a'), "signin", &sealed),
            None,
            "other name"
        );
        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = URL_SAFE_NO_PAD.encode(bytes);
        assert_eq!(
            open::<String>(&k('a'), "session", &tampered),
            None,
            "changed"
        );
        assert_ne!(
            seal(&k('a'), "session", &"the value").unwrap(),
            sealed,
            "fresh nonce"
        );
    }

    #[test]
    fn the_s256_challenge_is_the_unpadded_base64url_sha256_of_the_verifier() {
        // FIPS 180-2's test vector: SHA-256("abc") = ba7816bf...f20015ad, here in base64url.
        assert_eq!(s256("abc"), "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0");
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
