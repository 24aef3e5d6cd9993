//! An RS256 token signer for the development identity provider and for tests.
//!
//! `tenantctl` keeps the signing key in the secret store and serves the public half as a JWKS; tests
//! generate a key per run. Never on the request path: the runtime only verifies. The private key leaves
//! this type only as a `SecretString` (PKCS#8, base64).

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::jwks::Jwk;

#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("generating an RSA key failed")]
    Generate,
    #[error("the stored signing key is not a valid PKCS#8 RSA key")]
    BadKey,
}

/// Holds an RSA private key and signs compact JWS tokens with it.
pub struct DevSigner {
    key: RsaKeyPair,
    kid: String,
}

impl std::fmt::Debug for DevSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl DevSigner {
    /// Generates a fresh 2048-bit key.
    pub fn generate() -> Result<Self, SignerError> {
        let key = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| SignerError::Generate)?;
        Ok(Self::from_key(key))
    }

    fn from_key(key: RsaKeyPair) -> Self {
        let public = key.public_key();
        let n = URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero());
        let e = URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero());
        // RFC 7638 thumbprint: SHA-256 over the required members in lexicographic order.
        let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
        let kid = URL_SAFE_NO_PAD.encode(digest.as_ref());
        Self { key, kid }
    }

    /// Loads a key exported by `export_pkcs8`.
    pub fn from_pkcs8(secret: &SecretString) -> Result<Self, SignerError> {
        let der = zeroize::Zeroizing::new(
            STANDARD
                .decode(secret.expose_secret().trim())
                .map_err(|_| SignerError::BadKey)?,
        );
        let key = RsaKeyPair::from_pkcs8(&der).map_err(|_| SignerError::BadKey)?;
        Ok(Self::from_key(key))
    }

    /// The private key as PKCS#8 DER, base64, for the secret store.
    pub fn export_pkcs8(&self) -> Result<SecretString, SignerError> {
        let der = self.key.as_der().map_err(|_| SignerError::BadKey)?;
        Ok(SecretString::from(STANDARD.encode(der.as_ref())))
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWKS document.
    pub fn jwks(&self) -> Value {
        let public = self.key.public_key();
        json!({"keys": [{
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
            "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
        }]})
    }

    /// The public modulus (big-endian), e.g. to forge key-confusion tokens in tests.
    pub fn modulus(&self) -> Vec<u8> {
        self.key
            .public_key()
            .modulus()
            .big_endian_without_leading_zero()
            .to_vec()
    }

    /// The public key in the verifier's form.
    pub fn verifier_key(&self) -> Option<std::sync::Arc<Jwk>> {
        let public = self.key.public_key();
        Jwk::rsa(
            public.modulus().big_endian_without_leading_zero(),
            public.exponent().big_endian_without_leading_zero(),
        )
        .map(std::sync::Arc::new)
    }

    /// Signs `claims` with the standard header `{"alg":"RS256","typ":"JWT","kid":...}`.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.kid});
        self.sign_parts(header.to_string().as_bytes(), claims.to_string().as_bytes())
    }

    /// Signs arbitrary header and payload bytes (tests build hostile tokens with this).
    pub fn sign_parts(&self, header: &[u8], payload: &[u8]) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let mut signature = vec![0u8; self.key.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        if self
            .key
            .sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut signature)
            .is_err()
        {
            // Signing with a key that parsed cannot fail short of memory exhaustion.
            std::process::abort();
        }
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}
