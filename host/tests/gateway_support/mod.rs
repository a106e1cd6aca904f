//! Test support for the gateway integration tests: real HTTP upstreams on loopback that
//! record what they receive, a client, config files in a temporary directory, and an
//! in-process gateway.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use modelgate_host::gateway::Gateway;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// What an upstream saw of one request.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) body: Bytes,
}

/// How an upstream answers.
#[derive(Clone, Debug)]
pub(crate) struct Behaviour {
    pub(crate) status: u16,
    pub(crate) delay: Duration,
    /// Answer this many bytes of `a` instead of the JSON body.
    pub(crate) body_size: Option<usize>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            status: 200,
            delay: Duration::ZERO,
            body_size: None,
        }
    }
}

/// A real HTTP/1.1 server on 127.0.0.1 that records every request and answers
/// `{"upstream": "<name>"}` with an `x-upstream` header and an `x-upstream-custom` header.
pub(crate) struct Upstream {
    pub(crate) name: String,
    pub(crate) address: SocketAddr,
    pub(crate) seen: Arc<Mutex<Vec<Seen>>>,
    tasks: Arc<Mutex<JoinSet<()>>>,
}

impl Upstream {
    pub(crate) async fn start(name: &str) -> Upstream {
        Upstream::start_with(name, Behaviour::default()).await
    }

    pub(crate) async fn start_with(name: &str, behaviour: Behaviour) -> Upstream {
        Upstream::start_on(name, "127.0.0.1:0".parse().unwrap(), behaviour).await
    }

    /// Starts on a given address, e.g. to bring a killed replica back where it was.
    pub(crate) async fn start_on(
        name: &str,
        address: SocketAddr,
        behaviour: Behaviour,
    ) -> Upstream {
        let listener = TcpListener::bind(address).await.unwrap();
        let address = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let tasks = Arc::new(Mutex::new(JoinSet::new()));
        let (accept_seen, accept_tasks, accept_name) =
            (Arc::clone(&seen), Arc::clone(&tasks), name.to_owned());
        tasks.lock().unwrap().spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (seen, name, behaviour) = (
                    Arc::clone(&accept_seen),
                    accept_name.clone(),
                    behaviour.clone(),
                );
                let service = service_fn(move |request: Request<Incoming>| {
                    let (seen, name, behaviour) =
                        (Arc::clone(&seen), name.clone(), behaviour.clone());
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(http_body_util::Collected::to_bytes)
                            .unwrap_or_default();
                        let headers = parts
                            .headers
                            .iter()
                            .map(|(n, v)| {
                                (
                                    n.as_str().to_owned(),
                                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                )
                            })
                            .collect();
                        seen.lock().unwrap().push(Seen {
                            method: parts.method.to_string(),
                            path: parts.uri.to_string(),
                            headers,
                            body,
                        });
                        tokio::time::sleep(behaviour.delay).await;
                        let reply = match behaviour.body_size {
                            Some(n) => "a".repeat(n),
                            None => serde_json::json!({ "upstream": name }).to_string(),
                        };
                        let response = Response::builder()
                            .status(behaviour.status)
                            .header("content-type", "application/json")
                            .header("x-upstream", name.as_str())
                            .header("x-upstream-custom", "from-upstream")
                            .body(Full::new(Bytes::from(reply)))
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                accept_tasks.lock().unwrap().spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream {
            name: name.to_owned(),
            address,
            seen,
            tasks,
        }
    }

    pub(crate) fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub(crate) fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("upstream saw no request")
    }

    /// Stops accepting and drops every open connection, like a killed process.
    pub(crate) fn kill(&self) {
        self.tasks.lock().unwrap().abort_all();
    }
}

/// A config file in its own temporary directory (removed on drop).
pub(crate) struct ConfigFile {
    pub(crate) dir: PathBuf,
    pub(crate) path: PathBuf,
}

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

impl ConfigFile {
    pub(crate) fn new(yaml: &str) -> ConfigFile {
        let dir = std::env::temp_dir().join(format!(
            "modelgate-gateway-test-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("modelgate.yaml");
        std::fs::write(&path, yaml).unwrap();
        ConfigFile { dir, path }
    }

    /// Writes a sibling file (certificates, plugin configs, manifests).
    pub(crate) fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    pub(crate) fn rewrite(&self, yaml: &str) {
        // Write-then-rename, as editors and config management do, so a reader never sees half a file.
        let staging = self.dir.join("modelgate.yaml.new");
        std::fs::write(&staging, yaml).unwrap();
        std::fs::rename(&staging, &self.path).unwrap();
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A gateway running in this process, with its config file.
pub(crate) struct TestGateway {
    pub(crate) gateway: Gateway,
    pub(crate) config: ConfigFile,
    pub(crate) address: SocketAddr,
    pub(crate) admin: Option<SocketAddr>,
}

impl TestGateway {
    pub(crate) async fn start(yaml: &str) -> TestGateway {
        let config = ConfigFile::new(yaml);
        let gateway = Gateway::start(&config.path)
            .await
            .unwrap_or_else(|e| panic!("gateway did not start: {e}"));
        let address = gateway.listeners()[0].1;
        let admin = gateway.admin_address();
        TestGateway {
            gateway,
            config,
            address,
            admin,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub(crate) fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin.expect("no admin listener"))
    }
}

/// The YAML of a cluster list entry.
pub(crate) fn cluster(name: &str, upstreams: &[&Upstream]) -> String {
    let endpoints: Vec<String> = upstreams.iter().map(|u| u.address.to_string()).collect();
    format!(
        "  - {{name: {name}, endpoints: [{}]}}\n",
        endpoints.join(", ")
    )
}

/// A config with one listener (`listener` is its flow map) routing everything to `upstream`
/// as cluster `iris`.
pub(crate) fn catch_all(listener: &str, upstream: &Upstream) -> String {
    format!(
        "version: 1\nlisteners: [{listener}]\nclusters:\n{}routes: [{{match: {{prefix: /}}, cluster: iris}}]\n",
        cluster("iris", &[upstream])
    )
}

/// `modelgate check` on `config`: whether it passed, and its stdout.
pub(crate) fn check(config: &ConfigFile) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_modelgate"))
        .args(["check", "--config"])
        .arg(&config.path)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

pub(crate) type TestClient = Client<HttpConnector, Full<Bytes>>;

pub(crate) fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A response read whole.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: hyper::HeaderMap,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

pub(crate) async fn send(
    client: &TestClient,
    request: Request<Full<Bytes>>,
) -> Result<Answer, String> {
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

pub(crate) async fn get(client: &TestClient, url: &str) -> Answer {
    let request = Request::get(url).body(Full::default()).unwrap();
    send(client, request)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

pub(crate) fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// The path of a test filter from `host/tests/filters` (`conformance`, `noop`), built to
/// wasm32-wasip1 once per test binary, the same way the runtime's tests build them.
pub(crate) fn test_filter(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let root = workspace_root();
        let target_dir = root.join("target/test-filters");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(&cargo)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip1",
                "--manifest-path",
            ])
            .arg(root.join("host/tests/filters/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
        assert!(
            status.success(),
            "building the test filters failed; run: cargo build --release --target wasm32-wasip1 \
             --manifest-path host/tests/filters/Cargo.toml --target-dir target/test-filters"
        );
        target_dir.join("wasm32-wasip1/release")
    });
    dir.join(format!("{name}.wasm"))
}
