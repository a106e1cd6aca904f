use super::*;
use crate::units::ByteSize;

fn errors_of(yaml: &str) -> Vec<String> {
    parse(yaml)
        .expect_err("config should be rejected")
        .into_messages()
}

const MINIMAL: &str = "version: 1\nlisteners: [{address: 127.0.0.1:0}]\n";

#[test]
fn accepts_a_minimal_config_with_defaults() {
    let config = parse(MINIMAL).unwrap().document;
    assert_eq!(config.listeners[0].name, "main");
    assert_eq!(config.listeners[0].health_path.as_deref(), Some("/health"));
    assert_eq!(config.buffer_limit, ByteSize(1 << 20));
}

#[test]
fn concurrency_zero_means_one_worker_per_cpu() {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(parse(MINIMAL).unwrap().document.workers(), cpus);
    let three = parse(&format!("{MINIMAL}concurrency: 3\n")).unwrap();
    assert_eq!(three.document.workers(), 3);
    let errors = errors_of(&format!("{MINIMAL}concurrency: -1\n"));
    assert!(errors[0].starts_with("concurrency: "), "{errors:?}");
}

#[test]
fn zero_listener_timeouts_are_refused() {
    let errors = errors_of(
        "version: 1\nlisteners: [{address: 127.0.0.1:0, headerReadTimeout: 0s, tlsHandshakeTimeout: 0ms}]\n",
    );
    assert_eq!(
        errors,
        [
            "listeners[0].headerReadTimeout: must be greater than 0",
            "listeners[0].tlsHandshakeTimeout: must be greater than 0",
        ]
    );
}

#[test]
fn unknown_fields_name_their_path() {
    let errors = errors_of(
        "version: 1\nlisteners: [{address: 127.0.0.1:0, tls: {certFile: a, keyFile: b, extra: 1}}]\n",
    );
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("listeners[0].tls.extra: unknown field `extra`"),
        "{errors:?}"
    );
    assert!(errors[0].contains("unknown field `extra`"), "{errors:?}");
}

#[test]
fn reports_every_semantic_error() {
    let yaml = format!(
        "{MINIMAL}clusters: [{{name: a, endpoints: []}}]\nroutes:\n  - match: {{prefix: /, regex: '('}}\n    cluster: b\n"
    );
    let errors = errors_of(&yaml);
    assert!(
        errors.contains(&"clusters[0].endpoints: at least one endpoint is required".to_owned()),
        "{errors:?}"
    );
    assert!(
        errors.contains(
            &"routes[0].match: give exactly one of path, prefix, pathPrefix and regex".to_owned()
        ),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("routes[0].match.regex: ")),
        "{errors:?}"
    );
    assert!(
        errors.contains(&"routes[0].cluster: unknown cluster \"b\"".to_owned()),
        "{errors:?}"
    );
}

#[test]
fn bad_scalars_name_their_path() {
    let yaml =
        format!("{MINIMAL}clusters: [{{name: a, endpoints: [127.0.0.1:1], connectTimeout: 5}}]\n");
    let errors = errors_of(&yaml);
    assert!(
        errors[0].starts_with("clusters[0].connectTimeout: "),
        "{errors:?}"
    );
    let yaml = format!("{MINIMAL}clusters: [{{name: a, endpoints: [nowhere]}}]\n");
    assert!(errors_of(&yaml)[0].starts_with("clusters[0].endpoints[0]: "));
}

#[test]
fn filter_config_sources_are_exclusive() {
    let yaml = format!(
        "{MINIMAL}filters: [{{name: f, wasm: f.wasm, config: {{}}, configFile: c.json}}]\n"
    );
    assert_eq!(
        errors_of(&yaml),
        ["filters[0]: give at most one of config, configFile and fromEnvoyExtensionPolicy"]
    );
}

#[test]
fn rejects_other_versions() {
    let errors = errors_of("version: 2\nlisteners: [{address: 127.0.0.1:0}]\n");
    assert_eq!(errors, ["version: unsupported version 2, expected 1"]);
}

#[test]
fn route_listener_and_hostname_errors_name_their_field() {
    let yaml = format!(
        "version: 1\nlisteners: [{{name: public, address: 127.0.0.1:0, hostname: 'a.*.com'}}]\n{}",
        "clusters: [{name: c, endpoints: [127.0.0.1:1]}]\nroutes:\n  - {listeners: [public, privat], hostnames: ['*', 'x.com:80', '*'], match: {prefix: /}, cluster: c}\n"
    );
    let errors = errors_of(&yaml);
    assert_eq!(
        errors,
        [
            "listeners[0].hostname: \"a.*.com\": only a leading wildcard is supported (`*.example.com` or `*`)",
            "routes[0].listeners[1]: unknown listener \"privat\"",
            "routes[0].hostnames[1]: \"x.com:80\": ':' is not allowed (a hostname has no port, path or spaces)",
        ]
    );
}

#[test]
fn route_action_and_rewrite_errors_name_their_field() {
    let routes = "routes:
  - {match: {path: /a}}
  - {match: {path: /b, queryParams: [{name: q}, {name: '', regex: '('}]}, cluster: c, backends: [{cluster: nope}]}
  - {match: {regex: /c}, redirect: {statusCode: 307, hostname: '*.x.com', path: {replacePrefixMatch: /}}, rewrite: {}}
  - {match: {pathPrefix: d}, cluster: c, rewrite: {hostname: 'a b', path: {replaceFullPath: x, replacePrefixMatch: /y}}}
  - {match: {pathPrefix: /e}, cluster: c, rewrite: {path: {replaceFullPath: x}}}
  - {match: {path: /f}, directResponse: {statusCode: 600}, rewrite: {}}
";
    let yaml = format!(
        "version: 1\nlisteners: [{{address: 127.0.0.1:0}}]\nclusters: [{{name: c, endpoints: [127.0.0.1:1]}}]\n{routes}"
    );
    let errors = errors_of(&yaml);
    let expected = [
        "routes[0]: give exactly one of cluster, backends, redirect and directResponse",
        "routes[1].match.queryParams[0]: give exactly one of exact and regex",
        "routes[1].match.queryParams[1].name: must not be empty",
        "routes[1]: give exactly one of cluster, backends, redirect and directResponse",
        "routes[1].backends[0].cluster: unknown cluster \"nope\"",
        "routes[2]: give at most one of redirect and rewrite",
        "routes[2].redirect.statusCode: must be 301 or 302",
        "routes[2].redirect.hostname: \"*.x.com\": a wildcard is not a host",
        "routes[2].redirect.path.replacePrefixMatch: needs a prefix or pathPrefix match",
        "routes[3].match.pathPrefix: must start with '/'",
        "routes[3].rewrite.path: give exactly one of replaceFullPath and replacePrefixMatch",
        "routes[4].rewrite.path.replaceFullPath: must start with '/'",
        "routes[5].directResponse.statusCode: must be between 100 and 599",
        "routes[5]: give at most one of directResponse and rewrite",
    ];
    for e in expected {
        assert!(
            errors.contains(&e.to_owned()),
            "missing {e:?} in {errors:#?}"
        );
    }
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("routes[1].match.queryParams[1].regex: ")),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("routes[3].rewrite.hostname: ")),
        "{errors:#?}"
    );
}
