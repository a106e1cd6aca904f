//! `modelgate test` with the real `modelgate.wasm` (`--wasm`, so the tests do not depend on
//! what the binary embedded) over test files in scratch directories.
//!
//! What the runner must get right: a wrong expectation fails with a diff naming the field and
//! exit status 1; a broken file names the file, the case and the field path; `--filter` and
//! `--junit` do what they say; the complete example of docs/policy-tests.md passes.
//! Exit statuses and stderr need the binary; the rest runs in this process through
//! `policy_test::run`, so the module is compiled once per test binary rather than per case.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use modelgate_host::policy_test;

const BUILD_COMMAND: &str = "make wasm  (scripts/build-wasm.sh: cargo, then wasm-opt)";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn wasm() -> PathBuf {
    let path = repo().join("target/modelgate.wasm");
    assert!(
        path.exists(),
        "{} is missing; build it first with: {BUILD_COMMAND}",
        path.display()
    );
    path
}

/// A fresh directory under the system's temp dir.
fn scratch(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "modelgate-policy-test-{}-{}-{name}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

fn modelgate_test(args: &[&str]) -> Output {
    let wasm = wasm();
    let mut command = Command::new(env!("CARGO_BIN_EXE_modelgate"));
    command.arg("test").arg("--wasm").arg(&wasm).args(args);
    command.output().expect("modelgate runs")
}

/// In this process: whether every case passed, and what was printed.
fn run_here(paths: &[PathBuf], filter: Option<&str>, junit: Option<PathBuf>) -> (bool, String) {
    let options = policy_test::Options {
        paths: paths.to_vec(),
        wasm: Some(wasm()),
        junit,
        filter: filter.map(str::to_owned),
    };
    let mut out = Vec::new();
    let passed = policy_test::run(&options, &mut out).expect("the runner runs");
    (passed, String::from_utf8(out).expect("utf-8 output"))
}

fn last_line(text: &str) -> &str {
    text.lines().last().unwrap_or_default()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The closing line, exactly.
fn summary(output: &Output) -> String {
    stdout(output).lines().last().unwrap_or_default().to_owned()
}

/// One run of the binary over two scratch files: the demo suite with one wrong expectation,
/// and a policy the filter rejects.
#[test]
fn a_wrong_expectation_fails_with_a_readable_diff_and_exit_status_1() {
    let dir = scratch("wrong");
    std::fs::write(
        dir.join("rejected.json"),
        r#"{"version": 1, "models": {"m": {"rateLimit": {"requestsPerSecond": 0}}}}"#,
    )
    .expect("policy");
    let rejected = dir.join("rejected.test.yaml");
    std::fs::write(
        &rejected,
        "policy: {file: rejected.json}\ntests:\n  - name: any\n    request: {path: /v1/models/m}\n    expect: {status: 200}\n",
    )
    .expect("test file");
    copy_dir(&repo().join("examples/policy-tests/demo"), &dir);
    let file = dir.join("demo.test.yaml");
    let text = std::fs::read_to_string(&file).expect("demo suite");
    // The wine quota's sixth call is a 429; claim it is a 200 with another Retry-After.
    let right = "      - expect:\n          status: 429\n          headers: {retry-after: 1, ratelimit-limit: 5, ratelimit-remaining: 0}";
    let wrong = "      - expect:\n          status: 200\n          headers: {retry-after: 7, ratelimit-limit: 5, ratelimit-remaining: 0}";
    assert!(
        text.contains(right),
        "the demo suite changed; update this test"
    );
    std::fs::write(&file, text.replacen(right, wrong, 1)).expect("write scratch copy");

    let output = modelgate_test(&[
        file.to_str().expect("utf-8 path"),
        rejected.to_str().expect("utf-8 path"),
    ]);
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    let name = "wine allows a burst of 5, then 429 with Retry-After, then one more after 500 ms";
    let index = text[..text.find(name).expect("the case")]
        .matches("\n  - name: ")
        .count()
        - 1;
    let expected_diff = format!(
        "FAILED {}: {name}\n    step 2 of 4 (tests[{index}].steps[1]):\n    status\n      - 200\n      + 429\n    headers.retry-after\n      - \"7\"\n      + \"1\"\n",
        file.display()
    );
    assert!(out.contains(&expected_diff), "no such diff in:\n{out}");
    let cases = out
        .lines()
        .filter(|l| l.starts_with("ok ") || l.starts_with("FAILED "))
        .count();
    assert_eq!(
        summary(&output),
        format!("{} passed, 2 failed", cases - 2),
        "{out}"
    );
    // A policy the filter refuses fails its cases, and the filter's reason, with the config
    // field path, is on stderr.
    assert!(
        out.contains(&format!(
            "FAILED {}: any\n    the policy did not load",
            rejected.display()
        )),
        "{out}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("models.m.rateLimit.requestsPerSecond"),
        "the filter's reason, with its field path: {stderr}"
    );
}

#[test]
fn the_example_suites_pass() {
    let (passed, out) = run_here(&[repo().join("examples/policy-tests")], None, None);
    assert!(passed, "{out}");
    assert!(!out.contains("FAILED"), "{out}");
    let passed: usize = last_line(&out)
        .strip_suffix(" passed, 0 failed")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("summary: {out}"));
    assert!(passed >= 60, "{out}");
}

/// The fenced block of `lang` that follows `heading` in docs/policy-tests.md.
fn doc_block(doc: &str, heading: &str, lang: &str) -> String {
    let section = &doc[doc.find(heading).expect("heading in the doc")..];
    let fence = format!("```{lang}\n");
    let start = section.find(&fence).expect("code block") + fence.len();
    let end = start + section[start..].find("```").expect("closing fence");
    section[start..end].to_owned()
}

#[test]
fn the_documented_example_passes() {
    let doc = std::fs::read_to_string(repo().join("docs/policy-tests.md")).expect("doc");
    let dir = scratch("doc");
    std::fs::write(
        dir.join("policy.json"),
        doc_block(&doc, "## A complete example", "json"),
    )
    .expect("write policy");
    let file = dir.join("fraud.test.yaml");
    std::fs::write(&file, doc_block(&doc, "## A complete example", "yaml")).expect("write test");
    let (passed, out) = run_here(&[file], None, None);
    assert!(passed, "{out}");
    assert_eq!(last_line(&out), "8 passed, 0 failed", "{out}");
}

#[test]
fn a_broken_file_names_the_file_the_case_and_the_field_path() {
    let dir = scratch("broken");
    std::fs::write(dir.join("p.json"), r#"{"version": 1}"#).expect("policy");
    let file = dir.join("broken.test.yaml");
    std::fs::write(
        &file,
        "policy: {file: p.json}\ntests:\n  - name: fine\n    request: {path: /}\n    expect: {status: 200}\n  - name: typo\n    request: {path: /}\n    expect: {status: 200, header: {a: b}}\n",
    )
    .expect("test file");
    let (passed, out) = run_here(std::slice::from_ref(&file), None, None);
    assert!(!passed, "{out}");
    let line = out.lines().next().unwrap_or_default();
    assert!(
        line.starts_with(&format!(
            "FAILED {}: case \"typo\" (tests[1]): tests[1].expect.header: unknown field `header`",
            file.display()
        )),
        "{out}"
    );
    assert_eq!(last_line(&out), "0 passed, 1 failed");
}

#[test]
fn filter_selects_cases_and_junit_reports_them() {
    let dir = scratch("junit");
    let report = dir.join("report.xml");
    let (passed, out) = run_here(
        &[repo().join("examples/policy-tests/demo")],
        Some("quota"),
        Some(report.clone()),
    );
    assert!(passed, "{out}");
    let ran: Vec<&str> = out.lines().filter(|l| l.starts_with("ok ")).collect();
    assert!(ran.len() >= 2, "{out}");
    assert!(ran.iter().all(|l| l.contains("quota")), "{out}");
    let xml = std::fs::read_to_string(&report).expect("junit written");
    assert!(
        xml.contains(&format!("tests=\"{}\" failures=\"0\"", ran.len())),
        "{xml}"
    );
    assert_eq!(xml.matches("<testcase ").count(), ran.len(), "{xml}");
}

#[test]
fn bad_command_lines_exit_2() {
    let output = modelgate_test(&["/no/such/dir"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no such file or directory"));
    let output = modelgate_test(&["--filter", "(", "x.test.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--filter"));
}

/// A policy that holds the request headers for the body (`openai.holdHeadersForBody`): with
/// `allowOnHeadersStopIteration` as the deployment sets it, the body's model routes; without
/// it the request stalls as it would under Envoy's default, and the case fails as stalled
/// (with the setting named) instead of the run hanging.
#[test]
fn a_request_the_filter_never_resumes_fails_as_stalled_and_the_setting_routes_it() {
    let dir = scratch("hold");
    std::fs::write(
        dir.join("policy.json"),
        r#"{"version": 1, "openai": {"holdHeadersForBody": true},
            "models": {"llm": {"protocols": ["openai"], "openai": {"maxTokens": 512}}}}"#,
    )
    .expect("policy");
    let suite = |allow: bool| {
        format!(
            "policy: {{file: policy.json}}\n\
             allowOnHeadersStopIteration: {allow}\n\
             tests:\n\
             \x20 - name: chat\n\
             \x20   request: {{method: POST, path: /openai/v1/chat/completions,\n\
             \x20     body: {{model: llm, messages: [{{role: user, content: hi}}]}}}}\n\
             \x20   expect: {{status: 200, routedTo: llm}}\n"
        )
    };
    std::fs::write(dir.join("allowed.test.yaml"), suite(true)).expect("suite");
    std::fs::write(dir.join("envoy-default.test.yaml"), suite(false)).expect("suite");

    let (passed, out) = run_here(&[dir.join("allowed.test.yaml")], None, None);
    assert!(passed, "{out}");

    let (passed, out) = run_here(&[dir.join("envoy-default.test.yaml")], None, None);
    assert!(!passed, "{out}");
    assert!(
        out.contains("tests[0].request: stalled: no answer after 5s"),
        "{out}"
    );
    assert!(out.contains("allowOnHeadersStopIteration: true"), "{out}");
    assert_eq!(last_line(&out), "0 passed, 1 failed", "{out}");
}
