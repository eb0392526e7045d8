//! A registry token service as distribution's `auth: token` expects one
//! (docker's token spec): `GET /token?service=…&scope=…` with the registry
//! user's basic credentials answers `{"token": JWT, "expires_in": …}`, the JWT
//! signed ES256 with a key whose self-signed certificate rides in its `x5c`
//! header and sits in the registry's `rootcertbundle`. Every scope asked for
//! is granted to the right user; anyone else gets 401, as Harbor's and
//! GitLab's token services answer.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use p256::ecdsa::signature::Signer;
use p256::pkcs8::DecodePrivateKey;
use serde_json::{json, Value};
use warp::http::{Response, StatusCode};
use warp::Filter;

pub const ISSUER: &str = "slipway-test-token-service";
pub const SERVICE: &str = "slipway-test-registry";
/// Long enough for a test; short enough that nobody mistakes it for basic auth.
const TOKEN_SECONDS: u64 = 300;

/// The token service, on 127.0.0.1, served from its own thread so the
/// synchronous registry harness can use it.
pub struct TokenService {
    /// `http://127.0.0.1:PORT/token`
    pub realm: String,
    state: Arc<State>,
    _stop: std::sync::mpsc::Sender<()>,
}

struct State {
    user: String,
    password: String,
    key: p256::ecdsa::SigningKey,
    /// The certificate's DER, base64, for the `x5c` header.
    cert_der_b64: String,
    /// The scopes of every token issued, in order.
    issued: Mutex<Vec<String>>,
}

impl TokenService {
    /// Starts the service for `user`/`password`; writes the certificate the
    /// registry must trust to `cert_pem`.
    pub fn start(user: &str, password: &str, cert_pem: &Path) -> TokenService {
        let key = rcgen::KeyPair::generate().expect("generate the token key");
        let params = rcgen::CertificateParams::new(vec!["slipway-token-service".to_string()])
            .expect("token certificate parameters");
        let cert = params
            .self_signed(&key)
            .expect("self-sign the token certificate");
        std::fs::write(cert_pem, cert.pem()).expect("write the token certificate");
        let signing = p256::ecdsa::SigningKey::from_pkcs8_der(&key.serialize_der())
            .expect("the token key as P-256");
        let state = Arc::new(State {
            user: user.to_string(),
            password: password.to_string(),
            key: signing,
            cert_der_b64: base64::engine::general_purpose::STANDARD.encode(cert.der()),
            issued: Mutex::default(),
        });
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let served = state.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("token service runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind the token service");
                let port = listener.local_addr().expect("token service address").port();
                let _ = port_tx.send(port);
                let routes = warp::path("token")
                    .and(warp::get())
                    .and(warp::header::optional::<String>("authorization"))
                    .and(warp::query::raw().or(warp::any().map(String::new)).unify())
                    .map(move |auth: Option<String>, query: String| {
                        served.answer(auth.as_deref(), &query)
                    });
                let server = warp::serve(routes).incoming(listener).run();
                let stop = tokio::task::spawn_blocking(move || stopped.recv());
                tokio::select! {
                    _ = server => {}
                    _ = stop => {}
                }
            });
        });
        let port = port_rx.recv().expect("the token service's port");
        TokenService {
            realm: format!("http://127.0.0.1:{port}/token"),
            state,
            _stop: stop,
        }
    }

    /// A token for `scopes`, as the service would issue it (for the test's
    /// own reads of the registry).
    pub fn token(&self, scopes: &[&str]) -> String {
        self.state
            .issue(&scopes.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    /// The scopes of every token issued so far.
    pub fn issued(&self) -> Vec<String> {
        self.state
            .issued
            .lock()
            .map(|i| i.clone())
            .unwrap_or_default()
    }
}

impl State {
    fn answer(&self, authorization: Option<&str>, query: &str) -> Response<String> {
        if !self.authorized(authorization) {
            return Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .body(
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#
                        .into(),
                )
                .unwrap_or_default();
        }
        let scopes: Vec<String> = serde_urlencoded::from_str::<Vec<(String, String)>>(query)
            .unwrap_or_default()
            .into_iter()
            .filter(|(key, _)| key == "scope")
            .map(|(_, value)| value)
            .collect();
        let body = json!({"token": self.issue(&scopes), "expires_in": TOKEN_SECONDS});
        Response::builder()
            .header("content-type", "application/json")
            .body(body.to_string())
            .unwrap_or_default()
    }

    fn authorized(&self, authorization: Option<&str>) -> bool {
        let expected = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.user, self.password));
        authorization
            .and_then(|a| a.strip_prefix("Basic "))
            .is_some_and(|given| given == expected)
    }

    fn issue(&self, scopes: &[String]) -> String {
        if let Ok(mut issued) = self.issued.lock() {
            issued.extend(scopes.iter().cloned());
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let header = json!({"typ": "JWT", "alg": "ES256", "x5c": [self.cert_der_b64]});
        let claims = json!({
            "iss": ISSUER, "sub": self.user, "aud": SERVICE,
            "iat": now, "nbf": now.saturating_sub(10), "exp": now + TOKEN_SECONDS,
            "jti": format!("{now}-{}", scopes.len()),
            "access": access(scopes),
        });
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let signed = format!("{}.{}", b64(&header), b64(&claims));
        let signature: p256::ecdsa::Signature = self.key.sign(signed.as_bytes());
        let signature =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signature.to_bytes());
        format!("{signed}.{signature}")
    }
}

/// `repository:NAME:pull,push` scopes as the `access` claim, every action granted.
fn access(scopes: &[String]) -> Value {
    let mut granted: HashMap<(String, String), Vec<String>> = HashMap::new();
    for scope in scopes {
        let mut parts = scope.splitn(3, ':');
        let (Some(kind), Some(rest)) = (parts.next(), parts.next()) else {
            continue;
        };
        // A name may hold a port's colon in other scopes; repositories don't.
        let actions = parts.next().unwrap_or_default();
        granted
            .entry((kind.to_string(), rest.to_string()))
            .or_default()
            .extend(
                actions
                    .split(',')
                    .filter(|a| !a.is_empty())
                    .map(str::to_string),
            );
    }
    Value::Array(
        granted
            .into_iter()
            .map(|((kind, name), actions)| json!({"type": kind, "name": name, "actions": actions}))
            .collect(),
    )
}
