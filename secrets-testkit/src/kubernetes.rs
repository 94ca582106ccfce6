//! [`TokenReviewApi`]: the one Kubernetes API endpoint Vault's and OpenBao's
//! `kubernetes` auth call — `POST /apis/authentication.k8s.io/v1/tokenreviews`
//! — on loopback, since no cluster runs here. It knows a set of
//! service-account tokens and says who each belongs to, as the API server
//! does; anything else is not authenticated. Its client, and so its checker,
//! is OpenBao's own Kubernetes auth plugin, which parses the answers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A service account: its namespace, name and uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
    /// The uid.
    pub uid: String,
}

impl ServiceAccount {
    /// `namespace/name`, with a uid made from both.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: format!("uid-{namespace}-{name}"),
        }
    }

    /// A token for this account in the shape a cluster projects (a JWT
    /// with the `kubernetes.io` claims), signed with a key of its own: the
    /// review, not the signature, decides whether it is valid.
    pub fn token(&self) -> String {
        use base64::Engine as _;
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let header = b64(serde_json::json!({"alg": "RS256", "kid": "cluster-key"}));
        let claims = b64(serde_json::json!({
            "iss": "https://kubernetes.default.svc.cluster.local",
            "sub": format!("system:serviceaccount:{}:{}", self.namespace, self.name),
            "aud": ["https://kubernetes.default.svc.cluster.local"],
            "iat": now, "nbf": now, "exp": now + 3600,
            "kubernetes.io": {
                "namespace": self.namespace,
                "serviceaccount": {"name": self.name, "uid": self.uid},
            },
        }));
        // The signature is never checked here (the review is): any bytes.
        format!("{header}.{claims}.c2lnbmF0dXJlLW5vdC1jaGVja2Vk")
    }
}

#[derive(Debug, Default)]
struct Shared {
    accounts: Mutex<HashMap<String, ServiceAccount>>,
    reviews: AtomicUsize,
}

/// The TokenReview endpoint on a loopback port; stops on drop.
#[derive(Debug)]
pub struct TokenReviewApi {
    serving: crate::net::Serving,
    shared: Arc<Shared>,
}

impl TokenReviewApi {
    /// Starts the endpoint, knowing no token yet.
    pub fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let state = shared.clone();
        let serving = crate::net::Serving::start(move |stream| {
            let _ = review(stream, &state);
        });
        Self { serving, shared }
    }

    /// `http://127.0.0.1:PORT`, the `kubernetes_host`.
    pub fn url(&self) -> String {
        format!("http://{}", self.serving.addr())
    }

    /// Makes `account` known; its token.
    pub fn admit(&self, account: &ServiceAccount) -> String {
        let token = account.token();
        self.shared
            .accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.clone(), account.clone());
        token
    }

    /// Reviews answered so far.
    pub fn reviews(&self) -> usize {
        self.shared.reviews.load(Ordering::SeqCst)
    }
}

/// Answers one request (`Connection: close`).
fn review(stream: std::net::TcpStream, shared: &Shared) -> std::io::Result<()> {
    let request = crate::net::read_request(&stream)?;
    let (status, answer) = if request
        .line
        .starts_with("POST /apis/authentication.k8s.io/v1/tokenreviews")
    {
        shared.reviews.fetch_add(1, Ordering::SeqCst);
        let asked: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let token = asked["spec"]["token"].as_str().unwrap_or_default();
        let known = shared
            .accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned();
        let status = match known {
            Some(account) => serde_json::json!({
                "authenticated": true,
                "user": {
                    "username": format!("system:serviceaccount:{}:{}", account.namespace, account.name),
                    "uid": account.uid,
                    "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", account.namespace)],
                },
                "audiences": asked["spec"]["audiences"].clone(),
            }),
            None => serde_json::json!({"authenticated": false, "error": "invalid bearer token"}),
        };
        let answer = serde_json::json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "spec": asked["spec"].clone(),
            "status": status,
        });
        (201, answer.to_string())
    } else {
        (
            404,
            r#"{"kind":"Status","status":"Failure","code":404}"#.to_owned(),
        )
    };
    crate::net::write_json(&stream, status, &answer)
}
