//! The `modelgate` binary: `check` on good and bad configs, and `serve` with SIGTERM drain
//! and SIGHUP reload.

mod gateway_support;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper::StatusCode;

use gateway_support::{Behaviour, ConfigFile, Upstream, check, client, cluster, get};

const BINARY: &str = env!("CARGO_BIN_EXE_modelgate");

/// `check` on a config that must fail: every line of its output, with the file name removed.
fn check_errors(yaml: &str) -> Vec<String> {
    let config = ConfigFile::new(yaml);
    let (ok, stdout) = check(&config);
    assert!(!ok, "check passed: {stdout}");
    let prefix = format!("{}: ", config.path.display());
    stdout
        .lines()
        .map(|l| {
            l.strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("line without the file: {l}"))
                .to_owned()
        })
        .collect()
}

const BASE: &str = "version: 1\nlisteners: [{address: 127.0.0.1:0}]\n";

#[test]
fn check_accepts_a_good_config() {
    let config = ConfigFile::new(&format!(
        "{BASE}clusters: [{{name: c, endpoints: [127.0.0.1:18299]}}]\nroutes: [{{match: {{prefix: /}}, cluster: c}}]\n"
    ));
    assert_eq!(check(&config), (true, "OK\n".to_owned()));
}

#[test]
fn check_names_the_path_of_a_parse_error() {
    let errors = check_errors("version: 1\nlisteners: [{adress: 127.0.0.1:0}]\n");
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("listeners[0].adress: unknown field `adress`"),
        "{errors:?}"
    );
    let errors = check_errors(&format!(
        "{BASE}clusters: [{{name: c, endpoints: [127.0.0.1:1], lbPolicy: random}}]\n"
    ));
    assert!(
        errors[0].starts_with("clusters[0].lbPolicy: unknown variant `random`"),
        "{errors:?}"
    );
    let errors = check_errors(&format!("{BASE}bufferLimit: 12XB\n"));
    assert!(
        errors[0].starts_with("bufferLimit: size \"12XB\" has unknown unit"),
        "{errors:?}"
    );
}

#[test]
fn check_prints_every_semantic_error() {
    let errors = check_errors(&format!(
        "{BASE}clusters: [{{name: c, endpoints: [127.0.0.1:1]}}, {{name: c, endpoints: []}}]
routes:
  - {{match: {{regex: '(unclosed'}}, cluster: c}}
  - {{match: {{prefix: /, headers: [{{name: x, exact: a, present: true}}]}}, cluster: nowhere}}
"
    ));
    assert_eq!(
        errors,
        [
            "clusters[1].name: duplicate cluster \"c\"",
            "clusters[1].endpoints: at least one endpoint is required",
            "routes[0].match.regex: invalid regex \"(unclosed\": unclosed group",
            "routes[1].match.headers[0]: give exactly one of exact, regex and present",
            "routes[1].cluster: unknown cluster \"nowhere\"",
        ]
    );
}

#[test]
fn check_reports_missing_filter_files_and_policies() {
    let errors = check_errors(&format!(
        "{BASE}filters: [{{name: f, wasm: missing.wasm}}]\n"
    ));
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("filters[0].wasm: cannot read "),
        "{errors:?}"
    );
    assert!(errors[0].contains("missing.wasm"), "{errors:?}");

    let config = ConfigFile::new(&format!(
        "{BASE}filters: [{{name: f, wasm: f.wasm, fromEnvoyExtensionPolicy: {{file: policy.yaml, wasmName: other}}}}]\n"
    ));
    config.write("f.wasm", b"\0asm\x01\0\0\0");
    config.write(
        "policy.yaml",
        "kind: EnvoyExtensionPolicy\nmetadata: {name: p}\nspec:\n  wasm: [{name: modelgate, code: {type: HTTP}, config: {}}]\n",
    );
    let (ok, stdout) = check(&config);
    assert!(!ok);
    assert!(
        stdout.contains(
            ": filters[0].fromEnvoyExtensionPolicy: wasmName: no spec.wasm entry named \"other\""
        ),
        "{stdout}"
    );
}

/// `serve` compiles modules in a child process of its own; a module that does not compile
/// must still fail the start with the compiler's own words, as `check` (in-process) gives them.
#[test]
fn serve_reports_a_module_that_does_not_compile_as_check_does() {
    let config = ConfigFile::new(&format!("{BASE}filters: [{{name: f, wasm: f.wasm}}]\n"));
    // A type section that claims more bytes than the file has.
    config.write("f.wasm", b"\0asm\x01\0\0\0\x01\x7f\x01\x60");
    let (ok, stdout) = check(&config);
    assert!(!ok, "{stdout}");
    let reason = stdout
        .split_once(": filters[0] (f): ")
        .map_or_else(|| panic!("{stdout}"), |(_, reason)| reason.trim());
    assert!(!reason.is_empty());
    let served = Command::new(BINARY)
        .args(["serve", "--config"])
        .arg(&config.path)
        .output()
        .unwrap();
    assert!(!served.status.success());
    let stderr = String::from_utf8_lossy(&served.stderr);
    assert!(stderr.contains(reason), "{reason:?} not in {stderr}");
}

#[test]
fn check_reports_an_unreadable_config_file() {
    let output = Command::new(BINARY)
        .args(["check", "--config", "/nonexistent/modelgate.yaml"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout
            .starts_with("/nonexistent/modelgate.yaml: /nonexistent/modelgate.yaml: No such file"),
        "{stdout}"
    );
}

#[test]
fn bad_command_lines_exit_with_usage() {
    let output = Command::new(BINARY).args(["serve"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Usage: modelgate serve --config <FILE>"),
        "{stderr}"
    );
    let output = Command::new(BINARY)
        .args(["check", "--confg", "a.yaml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("similar argument exists: '--config'"),
        "{stderr}"
    );
}

#[test]
fn version_and_help_print_on_stdout_and_exit_0() {
    let output = Command::new(BINARY).arg("--version").output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("modelgate {}\n", env!("CARGO_PKG_VERSION"))
    );
    let output = Command::new(BINARY)
        .args(["help", "serve"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("Usage: modelgate serve --config <FILE>"),
        "{stdout}"
    );
}

/// A `modelgate serve` child process; killed on drop if still running.
struct Served {
    child: Child,
    address: SocketAddr,
    /// Access-log lines from stdout.
    access_log: std::sync::mpsc::Receiver<String>,
}

impl Served {
    fn start(config: &ConfigFile) -> Served {
        let mut child = Command::new(BINARY)
            .args(["serve", "--config"])
            .arg(&config.path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
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
        let stdout = child.stdout.take().unwrap();
        let (log_tx, access_log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = log_tx.send(line);
            }
        });
        let address = rx
            .recv_timeout(Duration::from_mins(1))
            .expect("the gateway did not report its listener");
        Served {
            child,
            address,
            access_log,
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the gateway did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_config(upstream: &Upstream) -> String {
    format!(
        "version: 1
listeners: [{{address: 127.0.0.1:0}}]
clusters:
{}routes: [{{match: {{prefix: /}}, cluster: c}}]
reload: {{watch: false}}
",
        cluster("c", &[upstream])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_request_in_flight_then_exits() {
    let slow = Upstream::start_with(
        "slow",
        Behaviour {
            delay: Duration::from_millis(700),
            ..Behaviour::default()
        },
    )
    .await;
    let config = ConfigFile::new(&serve_config(&slow));
    let mut served = Served::start(&config);
    let url = format!("http://{}/v1/models/m:predict", served.address);
    let in_flight = tokio::spawn(async move { get(&client(), &url).await });
    while slow.count() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    served.signal("TERM");
    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("x-upstream"), Some("slow"));
    let status = tokio::task::block_in_place(|| served.wait(Duration::from_secs(10)));
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config() {
    let (first, second) = (
        Upstream::start("first").await,
        Upstream::start("second").await,
    );
    let config = ConfigFile::new(&serve_config(&first));
    let served = Served::start(&config);
    let url = format!("http://{}/", served.address);
    assert_eq!(
        get(&client(), &url).await.header("x-upstream"),
        Some("first")
    );
    config.rewrite(&serve_config(&second));
    served.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = get(&client(), &url).await;
        assert_eq!(answer.status, StatusCode::OK);
        if answer.header("x-upstream") == Some("second") {
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_has_one_json_line_per_request_with_filter_state() {
    let upstream = Upstream::start("iris").await;
    let yaml = format!(
        "version: 1
listeners: [{{address: 127.0.0.1:0}}]
clusters:
{}routes: [{{name: all, match: {{prefix: /}}, cluster: c}}]
filters: [{{name: conformance, wasm: {}, vmCount: 1}}]
accessLog: {{filterState: {{stored: wasm.my.key, absent: wasm.nothing}}}}
clientTraffic: {{headers: {{requestID: PreserveOrGenerate}}}}
",
        cluster("c", &[&upstream]),
        gateway_support::test_filter("conformance").display()
    );
    let config = ConfigFile::new(&yaml);
    let served = Served::start(&config);
    let url = format!("http://{}/v1/models/iris:predict?x=1", served.address);
    let request = hyper::Request::post(&url)
        .header("x-case", "properties")
        .header("x-request-id", "log-me")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"12345",
        )))
        .unwrap();
    let answer = gateway_support::send(&client(), request).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    let line = served
        .access_log
        .recv_timeout(Duration::from_secs(10))
        .unwrap();
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["request_id"], "log-me");
    assert_eq!(entry["method"], "POST");
    // The query string (which may carry a token) is not logged.
    assert_eq!(entry["path"], "/v1/models/iris:predict");
    assert_eq!(entry["protocol"], "HTTP/1.1");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["route"], "all");
    assert_eq!(entry["cluster"], "c");
    assert_eq!(entry["endpoint"], upstream.address.to_string());
    assert_eq!(entry["bytes_received"], 5);
    assert_eq!(entry["bytes_sent"], answer.body.len());
    assert!(entry["duration_ms"].as_f64().unwrap() >= entry["upstream_ms"].as_f64().unwrap());
    assert!(entry["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(entry["stored"], "stored");
    assert!(entry.get("absent").is_none());
}
