use super::{Endpoint, Target, classify, query, strip_query};
use crate::config::Protocol::{V1, V2};

fn model(name: &str, protocol: crate::config::Protocol, endpoint: Endpoint) -> Target<'_> {
    Target::Model {
        name,
        protocol,
        endpoint,
    }
}

#[test]
fn classifies_kserve_paths() {
    let cases = [
        ("/v1/models", Target::List(V1)),
        ("/v1/models/", Target::List(V1)),
        ("/v2/models", Target::List(V2)),
        ("/v1/models/iris", model("iris", V1, Endpoint::Metadata)),
        (
            "/v1/models/iris:predict",
            model("iris", V1, Endpoint::Predict),
        ),
        (
            "/v1/models/iris:explain",
            model("iris", V1, Endpoint::Explain),
        ),
        ("/v1/models/iris:train", model("iris", V1, Endpoint::Other)),
        ("/v1/models/iris/extra", model("iris", V1, Endpoint::Other)),
        (
            "/v1/models/sk_learn.v2-a:predict",
            model("sk_learn.v2-a", V1, Endpoint::Predict),
        ),
        ("/v2/models/iris", model("iris", V2, Endpoint::Metadata)),
        ("/v2/models/iris/ready", model("iris", V2, Endpoint::Ready)),
        ("/v2/models/iris/infer", model("iris", V2, Endpoint::Infer)),
        (
            "/v2/models/iris/versions/3",
            model("iris", V2, Endpoint::Metadata),
        ),
        (
            "/v2/models/iris/versions/3/infer",
            model("iris", V2, Endpoint::Infer),
        ),
        (
            "/v2/models/iris/versions/3/ready",
            model("iris", V2, Endpoint::Ready),
        ),
        (
            "/v2/models/iris/generate",
            model("iris", V2, Endpoint::Other),
        ),
        (
            "/v1/models/iris:predict?x=1",
            model("iris", V1, Endpoint::Predict),
        ),
        (
            "/v2/models/iris/infer#frag",
            model("iris", V2, Endpoint::Infer),
        ),
        ("/v2/models/iris/infer/", model("iris", V2, Endpoint::Infer)),
        ("/v2/models/iris/", model("iris", V2, Endpoint::Metadata)),
        (
            "/v1/models/iris:predict/",
            model("iris", V1, Endpoint::Predict),
        ),
        ("/", Target::Other),
        ("/v2/health/live", Target::Other),
        ("/v2", Target::Other),
        ("/v1/modelsx", Target::Other),
        ("/v1/chat/completions", Target::Other),
    ];
    for (path, want) in cases {
        assert_eq!(classify(path), want, "path {path}");
    }
}

#[test]
fn repository_actions_name_their_model() {
    let repo = |name| model(name, V2, Endpoint::Repository);
    let cases = [
        ("/v2/repository/models/iris/load", repo("iris")),
        ("/v2/repository/models/iris/unload", repo("iris")),
        ("/v2/repository/models/iris/unload/", repo("iris")),
        ("/v2/repository/models/iris/unload?x=1", repo("iris")),
        (
            "/v2/repository/models/sk_learn.v2-a/load",
            repo("sk_learn.v2-a"),
        ),
        // Whatever else the server may add under a model's repository path is still that model's.
        ("/v2/repository/models/iris", repo("iris")),
        ("/v2/repository/models/iris/config", repo("iris")),
        // The index names no model (see docs/config.md): authentication only.
        ("/v2/repository/index", Target::Other),
        ("/v2/repository/models", Target::Other),
        ("/v2/repositoryx/models/iris/unload", Target::Other),
        ("/v1/repository/models/iris/unload", Target::Other),
    ];
    for (path, want) in cases {
        assert_eq!(classify(path), want, "path {path}");
    }
}

#[test]
fn refuses_paths_a_server_could_read_differently() {
    let cases = [
        "",
        "v1/models/iris",
        "/v1/models/../models/iris:predict",
        "/v1/models/./iris",
        "/v1//models/iris",
        "/v1/models//iris",
        "/%761/models/iris:predict",
        "/v1/models/ir%69s:predict",
        "/v1/models/iris\\x",
        "/v1/models/ir is",
        "/v1/models/iris\u{e9}",
        "/v1/models/iris\t",
        "/v1/models/:predict",
        "/v1/models/ir!s:predict",
        "/v2/models/iris/versions//infer",
        "/v2/models/iris/versions/v$1/infer",
        "/v2/repository/models/",
        "/v2/repository/models//unload",
        "/v2/repository/models/ir%69s/unload",
        "/v2/repository/models/../models/iris/unload",
        "/v2/repository/models/ir!s/unload",
        "/v2/repository/models/iris:x/unload",
    ];
    for path in cases {
        assert!(
            matches!(classify(path), Target::Invalid(_)),
            "path {path:?} gave {:?}",
            classify(path)
        );
    }
}

#[test]
fn splits_query_strings() {
    assert_eq!(strip_query("/a?b=c#d"), "/a");
    assert_eq!(strip_query("/a#d?x"), "/a");
    assert_eq!(query("/a?b=c#d"), Some("b=c"));
    assert_eq!(query("/a"), None);
    assert_eq!(query("/a?"), Some(""));
}

/// A backslash is refused by the form check itself, not only where a model name cannot hold
/// one: some servers and proxies read it as a separator, so `/v1/models\iris` could name a model
/// for them while it is a model-less path here.
#[test]
fn refuses_backslashes_outside_model_names_too() {
    for path in [
        "/v1/models\\iris:predict",
        "/v2\\models/iris/infer",
        "/v2/health\\ready",
        "/\\",
    ] {
        assert_eq!(
            classify(path),
            Target::Invalid("path contains an encoded, non-ASCII or control character"),
            "{path:?}"
        );
    }
}
