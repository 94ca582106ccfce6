//! The OAuth2 client the stored secret holds: an id and either a secret or
//! a private key that signs an assertion (RFC 7523, `private_key_jwt`).

use std::fmt;
use std::time::{Duration, SystemTime};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mlflow_secrets_auth_core::secrecy::{ExposeSecret, SecretString};
use mlflow_secrets_auth_core::{Result, SecretError};
use zeroize::Zeroizing;

use crate::config::{CLIENT_AUTH, CLIENT_ID, ClientAuth};

/// A client id and what proves it.
#[derive(Clone)]
pub struct Client {
    /// The client id (not a secret; shown in errors and `info`).
    pub id: String,
    pub(crate) proof: Proof,
}

/// What proves a client at the token endpoint.
#[derive(Clone)]
pub(crate) enum Proof {
    /// A client secret (`client_secret_basic`, `client_secret_post`).
    Secret(SecretString),
    /// A private key signing a short-lived assertion (`private_key_jwt`).
    Key(SigningKey),
}

/// A private key, the algorithm it signs with and its key id.
#[derive(Clone)]
pub(crate) struct SigningKey {
    key: EncodingKey,
    pub(crate) algorithm: Algorithm,
    key_id: Option<String>,
    /// The PEM as stored, to tell a rotated key from the same one.
    pem: SecretString,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proof = match &self.proof {
            Proof::Secret(_) => "secret",
            Proof::Key(_) => "private key",
        };
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("proof", &proof)
            .finish_non_exhaustive()
    }
}

/// The longest client id or secret read (far above any IdP's).
const MAX_FIELD: usize = 4096;

/// The longest private key read (a PEM RSA key of 8192 bits is ~6.4 KB).
const MAX_KEY: usize = 16 * 1024;

/// How long an assertion is valid: long enough for one request.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(60);

/// The stored client's fields, as its errors name them.
fn expected(auth: ClientAuth) -> SecretError {
    SecretError::invalid_secret(match auth {
        ClientAuth::PrivateKeyJwt => format!(
            "for private_key_jwt the secret must be a JSON object with `client_id`, `private_key` (PEM) and optionally `key_id`, or the PEM key alone with {CLIENT_ID} set"
        ),
        _ => format!(
            "for OAuth2 the secret must be a JSON object with `client_id` and `client_secret`, or the client secret alone with {CLIENT_ID} set"
        ),
    })
}

impl Client {
    /// The client in a stored secret, read for `auth`:
    /// `{"client_id": …, "client_secret": …}`, or
    /// `{"client_id": …, "private_key": "-----BEGIN …", "key_id": …}` for
    /// `private_key_jwt`; or the bare secret (or PEM key) when `client_id`
    /// (from `MLFLOW_SECRETS_OAUTH_CLIENT_ID`) is given. Errors name the
    /// fields expected, never a value.
    pub fn parse(text: &str, client_id: Option<&str>, auth: ClientAuth) -> Result<Self> {
        let text = text.trim();
        let (id, proof, key_id) = if text.starts_with('{') {
            let value: serde_json::Value =
                serde_json::from_str(text).map_err(|_| expected(auth))?;
            let field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::trim);
            let id = field("client_id")
                .or(client_id)
                .ok_or_else(|| expected(auth))?;
            let proof = match auth {
                ClientAuth::PrivateKeyJwt => field("private_key"),
                _ if value.get("private_key").is_some() => {
                    return Err(SecretError::invalid_secret(format!(
                        "the secret holds a `private_key`: set {CLIENT_AUTH}=private_key_jwt to sign with it"
                    )));
                }
                _ => field("client_secret"),
            };
            let proof = proof.ok_or_else(|| expected(auth))?;
            (
                id.to_owned(),
                proof.to_owned(),
                field("key_id").map(str::to_owned),
            )
        } else {
            let id = client_id.ok_or_else(|| expected(auth))?;
            (id.to_owned(), text.to_owned(), None)
        };
        let proof = Zeroizing::new(proof);
        if id.is_empty() || proof.is_empty() {
            return Err(expected(auth));
        }
        if id.len() > MAX_FIELD || key_id.as_ref().is_some_and(|k| k.len() > MAX_FIELD) {
            return Err(SecretError::invalid_secret(format!(
                "the OAuth2 client id or key id is longer than {MAX_FIELD} bytes"
            )));
        }
        if id.chars().any(char::is_control) {
            return Err(SecretError::invalid_secret(
                "the OAuth2 client id holds a control character",
            ));
        }
        let proof = if auth == ClientAuth::PrivateKeyJwt {
            Proof::Key(SigningKey::parse(&proof, key_id)?)
        } else {
            if proof.len() > MAX_FIELD {
                return Err(SecretError::invalid_secret(format!(
                    "the OAuth2 client secret is longer than {MAX_FIELD} bytes"
                )));
            }
            if proof.chars().any(char::is_control) {
                return Err(SecretError::invalid_secret(
                    "the OAuth2 client secret holds a control character",
                ));
            }
            Proof::Secret(proof.as_str().into())
        };
        Ok(Self { id, proof })
    }

    /// The text to hide from every redacted output: the client secret, or
    /// the private key.
    pub(crate) fn hidden(&self) -> &str {
        match &self.proof {
            Proof::Secret(secret) => secret.expose_secret(),
            Proof::Key(key) => key.pem.expose_secret(),
        }
    }

    /// Whether `other` is the same client with the same secret or key.
    pub fn same_as(&self, other: &Self) -> bool {
        self.id == other.id && self.hidden() == other.hidden()
    }

    /// A signed assertion for `audience` (the token endpoint): `iss` and
    /// `sub` the client id, a one-minute `exp`, a random `jti` (RFC 7523 §3).
    pub(crate) fn assertion(&self, key: &SigningKey, audience: &str) -> Result<Zeroizing<String>> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti).map_err(|e| {
            SecretError::new(
                mlflow_secrets_auth_core::ErrorKind::Transient,
                format!("no randomness for the assertion's jti: {e}"),
            )
        })?;
        let claims = serde_json::json!({
            "iss": self.id,
            "sub": self.id,
            "aud": audience,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME.as_secs(),
            "jti": jti.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        });
        key.sign(&claims)
    }
}

impl SigningKey {
    /// A PEM private key: RSA (RS256), EC P-256 or P-384 (ES256, ES384) in
    /// PKCS#8, or Ed25519 (EdDSA); tried by signing once, so a key that
    /// cannot sign is refused here, not at the IdP.
    fn parse(pem: &str, key_id: Option<String>) -> Result<Self> {
        let unreadable = || {
            SecretError::invalid_secret(
                "the `private_key` is not a PEM private key this version signs with (RSA, EC P-256 or P-384 in PKCS#8, Ed25519)",
            )
        };
        if pem.len() > MAX_KEY {
            return Err(SecretError::invalid_secret(format!(
                "the `private_key` is longer than {MAX_KEY} bytes"
            )));
        }
        if !pem.starts_with("-----BEGIN ") {
            return Err(unreadable());
        }
        let bytes = pem.as_bytes();
        let candidates = [
            (EncodingKey::from_rsa_pem(bytes), Algorithm::RS256),
            (EncodingKey::from_ec_pem(bytes), Algorithm::ES256),
            (EncodingKey::from_ec_pem(bytes), Algorithm::ES384),
            (EncodingKey::from_ed_pem(bytes), Algorithm::EdDSA),
        ];
        for (key, algorithm) in candidates {
            let Ok(key) = key else { continue };
            let candidate = Self {
                key,
                algorithm,
                key_id: key_id.clone(),
                pem: pem.into(),
            };
            if candidate.sign(&serde_json::json!({})).is_ok() {
                return Ok(candidate);
            }
        }
        Err(unreadable())
    }

    fn sign(&self, claims: &serde_json::Value) -> Result<Zeroizing<String>> {
        use jsonwebtoken::crypto::CryptoProvider;
        if CryptoProvider::try_get_default().is_none() {
            // Another crate enabled a second backend: use ours.
            let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
        }
        let mut header = Header::new(self.algorithm);
        header.kid.clone_from(&self.key_id);
        jsonwebtoken::encode(&header, claims, &self.key)
            .map(Zeroizing::new)
            .map_err(|_| {
                SecretError::invalid_secret("the `private_key` could not sign the assertion")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASIC: ClientAuth = ClientAuth::SecretBasic;

    #[test]
    fn json_or_bare_with_the_id_variable() {
        let client = Client::parse(
            r#"{"client_id": "mlflow-ci", "client_secret": "s3cr:t %x"}"#,
            None,
            BASIC,
        )
        .unwrap();
        assert_eq!(client.id, "mlflow-ci");
        assert_eq!(client.hidden(), "s3cr:t %x");
        let client = Client::parse(" bare-secret\n", Some("mlflow-ci"), BASIC).unwrap();
        assert_eq!(client.hidden(), "bare-secret");
        assert!(!format!("{client:?}").contains("bare-secret"));
    }

    #[test]
    fn anything_else_names_the_fields_and_never_the_value() {
        for (text, id) in [
            ("bare-secret-value", None),
            (r#"{"client_id": "x"}"#, None),
            (r#"{"client_secret": "hidden-value"}"#, None),
            (r#"{"token": "hidden-value"}"#, Some("x")),
            ("{not json hidden-value", None),
        ] {
            let error = Client::parse(text, id, BASIC).unwrap_err().to_string();
            assert!(error.contains("client_secret"), "{error}");
            assert!(!error.contains("hidden-value") && !error.contains("bare-secret"));
        }
        let error = Client::parse(r#"{"client_id": "x", "private_key": "k"}"#, None, BASIC)
            .unwrap_err()
            .to_string();
        assert!(error.contains("private_key_jwt"), "{error}");
    }

    #[test]
    fn a_private_key_signs_and_a_bad_one_is_refused_unseen() {
        const JWT: ClientAuth = ClientAuth::PrivateKeyJwt;
        let pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let stored = serde_json::json!({"client_id": "ci", "private_key": pem, "key_id": "k1"});
        let client = Client::parse(&stored.to_string(), None, JWT).unwrap();
        let Proof::Key(key) = &client.proof else {
            panic!("a key")
        };
        assert_eq!(key.algorithm, Algorithm::ES256);
        for (pair, algorithm) in [
            (
                rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048),
                Algorithm::RS256,
            ),
            (
                rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
                Algorithm::ES384,
            ),
            (
                rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519),
                Algorithm::EdDSA,
            ),
        ] {
            let pem = pair.unwrap().serialize_pem();
            let stored = serde_json::json!({"client_id": "ci", "private_key": pem});
            let client = Client::parse(&stored.to_string(), None, JWT).unwrap();
            let Proof::Key(key) = &client.proof else {
                panic!("a key")
            };
            assert_eq!(key.algorithm, algorithm);
        }
        assert!(!format!("{client:?}").contains("BEGIN"));
        let assertion = client.assertion(key, "https://idp.example/token").unwrap();
        let claims = crate::claims(&assertion).unwrap();
        assert_eq!(claims.audience, ["https://idp.example/token"]);
        assert_eq!(claims.issuer.as_deref(), Some("ci"));
        // A fresh jti each time: IdPs refuse a replayed assertion.
        assert_ne!(
            *client.assertion(key, "a").unwrap(),
            *client.assertion(key, "a").unwrap()
        );
        for bad in [
            serde_json::json!({"client_id": "ci", "private_key": "-----BEGIN PRIVATE KEY-----\nhidden-value\n-----END PRIVATE KEY-----"}),
            serde_json::json!({"client_id": "ci", "private_key": "hidden-value"}),
            serde_json::json!({"client_id": "ci", "client_secret": "hidden-value"}),
        ] {
            let error = Client::parse(&bad.to_string(), None, JWT)
                .unwrap_err()
                .to_string();
            assert!(error.contains("private_key"), "{error}");
            assert!(!error.contains("hidden-value"), "{error}");
        }
    }
}
