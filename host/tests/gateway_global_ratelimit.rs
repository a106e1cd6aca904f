//! `globalRateLimit`: several `modelgate serve` processes (Envoy replicas) counting in one real
//! `redis-server` on loopback keep one budget per caller, as Envoy Gateway's global rate limit
//! does; and what happens when the store is away.
//!
//! Needs `redis-server` (the Debian package; scripts/setup.sh installs it).

mod gateway_support;

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, StatusCode};

use gateway_support::{ConfigFile, TestClient, Upstream, client, cluster, send};

const BINARY: &str = env!("CARGO_BIN_EXE_modelgate");
/// Requests per caller per hour, counted across every replica.
const LIMIT: usize = 5;
const REPLICAS: usize = 3;

/// A child process, killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` on a free loopback port, with nothing saved to disk.
fn redis() -> (Process, u16) {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (Debian package redis-server; scripts/setup.sh installs it)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    (Process(child), port)
}

/// `modelgate serve` with `config`; its listener's address once it reports it.
fn serve(config: &ConfigFile) -> (Process, SocketAddr) {
    let mut child = Command::new(BINARY)
        .args(["serve", "--config"])
        .arg(&config.path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listener main on ").nth(1) {
                let _ = tx.send(rest.trim().parse::<SocketAddr>().unwrap());
            }
        }
    });
    let address = rx
        .recv_timeout(Duration::from_mins(1))
        .expect("the gateway did not report its listener");
    (Process(child), address)
}

fn config(upstream: &Upstream, redis_port: u16, fail_closed: bool) -> ConfigFile {
    // A one-second timeout instead of Envoy's 20 ms: this machine's CPUs are shared, and a
    // late answer would let a request through (fail open), which is not what is tested here.
    ConfigFile::new(&format!(
        "version: 1
listeners: [{{name: main, address: 127.0.0.1:0}}]
clusters:
{}routes: [{{name: models, match: {{prefix: /}}, cluster: c}}]
reload: {{watch: false}}
concurrency: 1
globalRateLimit:
  redis: 127.0.0.1:{redis_port}
  timeout: 1s
  failClosed: {fail_closed}
  rules:
    - clientSelectors:
        - headers: [{{type: Distinct, name: x-caller}}]
      limit: {{requests: {LIMIT}, unit: Hour}}
",
        cluster("c", &[upstream])
    ))
}

async fn call(
    client: &TestClient,
    gateway: SocketAddr,
    caller: Option<&str>,
) -> (StatusCode, Option<String>) {
    let mut request = Request::get(format!("http://{gateway}/v1/models/m"));
    if let Some(caller) = caller {
        request = request.header("x-caller", caller);
    }
    let answer = send(client, request.body(Full::<Bytes>::default()).unwrap())
        .await
        .unwrap();
    let flag = answer.header("x-envoy-ratelimited").map(str::to_owned);
    (answer.status, flag)
}

/// The hour's window resets on the hour: a run that might cross it waits for the next one.
fn away_from_a_window_edge() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let left = 3_600 - now % 3_600;
    if left < 30 {
        std::thread::sleep(Duration::from_secs(left + 1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_one_redis_keep_one_budget_per_caller() {
    let (_redis, port) = redis();
    let upstream = Upstream::start("u").await;
    let config = config(&upstream, port, false);
    let replicas: Vec<(Process, SocketAddr)> = (0..REPLICAS).map(|_| serve(&config)).collect();
    away_from_a_window_edge();
    let client = client();
    // Round robin over the replicas, as a load balancer in front of N Envoys.
    let mut alice = Vec::new();
    for i in 0..REPLICAS * LIMIT {
        alice.push(call(&client, replicas[i % REPLICAS].1, Some("alice")).await);
    }
    let admitted = alice.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!(admitted, LIMIT, "{alice:?}");
    // The first LIMIT pass; every later one is Envoy's 429, whichever replica it reached.
    assert!(alice[..LIMIT].iter().all(|(s, _)| *s == StatusCode::OK));
    for (status, flag) in &alice[LIMIT..] {
        assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(flag.as_deref(), Some("true"));
    }
    // Refused requests never reached the upstream.
    assert_eq!(upstream.seen.lock().unwrap().len(), LIMIT);
    // Another caller has a budget of its own; a request without the header is not counted.
    for i in 0..LIMIT {
        let (status, _) = call(&client, replicas[i % REPLICAS].1, Some("bob")).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _) = call(&client, replicas[0].1, Some("bob")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    for replica in &replicas {
        assert_eq!(call(&client, replica.1, None).await.0, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_store_the_limit_fails_open_unless_told_to_fail_closed() {
    // A port where nothing listens.
    let port = free_port();
    let upstream = Upstream::start("u").await;
    let open = config(&upstream, port, false);
    let (_open, open_at) = serve(&open);
    let closed = config(&upstream, port, true);
    let (_closed, closed_at) = serve(&closed);
    let client = client();
    for _ in 0..=LIMIT {
        assert_eq!(
            call(&client, open_at, Some("alice")).await.0,
            StatusCode::OK
        );
    }
    assert_eq!(
        call(&client, closed_at, Some("alice")).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
}
