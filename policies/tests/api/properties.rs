//! Property tests: arbitrary input never panics; generated valid payloads always pass.

use modelgate_policies::{BodyDecision, HeadersDecision, MemoryStore, Policies};
use proptest::prelude::*;
use serde_json::json;

use crate::support::{NOW, Req, at, base_config, policies, token};

fn unauthenticated_policies() -> Policies {
    let cfg = json!({
        "version": 1,
        "routing": {"bodyModel": {"paths": ["/chat"]}},
        "rateLimit": {"key": "clientAddress"},
        "models": {
            "m": {"rateLimit": {"requestsPerSecond": 1000}, "validation": {"featureCount": 3}},
            "free": {"validation": {"elementType": "any"}}
        }
    });
    policies(&cfg)
}

/// Drive a request through both phases with `body`.
fn drive(p: &Policies, method: &'static str, path: &str, body: &[u8]) {
    // V2 bodies are read as JSON only with a JSON content type.
    let mut req = Req::get(path).header("content-type", "application/json");
    req.method = method;
    let store = MemoryStore::new();
    if let HeadersDecision::NeedBody(need) = req.headers_decision(p, at(NOW), &store) {
        let _ = p.on_request_body(&need.pending, body, at(NOW), &store);
    }
}

fn accept(p: &Policies, path: &str, body: &[u8]) -> Result<(), String> {
    let store = MemoryStore::new();
    let req = Req::post(path).header("content-type", "application/json");
    match req.headers_decision(p, at(NOW), &store) {
        HeadersDecision::NeedBody(need) => {
            match p.on_request_body(&need.pending, body, at(NOW), &store) {
                BodyDecision::Continue(_) => Ok(()),
                BodyDecision::Reply(r) => Err(r.body),
            }
        }
        other => Err(format!("{other:?}")),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_paths_never_panic(path in ".{0,80}", prefix in prop::sample::select(vec!["", "/v1/models/", "/v2/models/", "/v2/models/m/versions/"])) {
        let p = unauthenticated_policies();
        drive(&p, "POST", &format!("{prefix}{path}"), b"{}");
        drive(&p, "GET", &format!("{prefix}{path}"), b"");
    }

    #[test]
    fn arbitrary_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let p = unauthenticated_policies();
        for path in ["/v1/models/m:predict", "/v1/models/free:explain", "/v2/models/m/infer", "/chat"] {
            drive(&p, "POST", path, &body);
        }
    }

    #[test]
    fn arbitrary_json_bodies_never_panic(body in arbitrary_json()) {
        let p = unauthenticated_policies();
        let bytes = body.to_string().into_bytes();
        for path in ["/v1/models/m:predict", "/v1/models/free:predict", "/v2/models/m/infer", "/chat"] {
            drive(&p, "POST", path, &bytes);
        }
    }

    #[test]
    fn arbitrary_tokens_never_panic(token in "[A-Za-z0-9._=-]{0,300}") {
        static POLICIES: std::sync::OnceLock<Policies> = std::sync::OnceLock::new();
        let p = POLICIES.get_or_init(|| policies(&base_config()));
        let store = MemoryStore::new();
        let req = Req::get("/v1/models/sklearn-iris").bearer(&token);
        let _ = req.send(p, b"", at(NOW), &store);
    }

    #[test]
    fn generated_v1_payloads_pass(rows in prop::collection::vec(prop::array::uniform3(-1e6f64..1e6), 1..50), key in prop::sample::select(vec!["instances", "inputs"])) {
        let p = unauthenticated_policies();
        let body = json!({ key: rows }).to_string();
        prop_assert_eq!(accept(&p, "/v1/models/m:predict", body.as_bytes()), Ok(()));
    }

    #[test]
    fn a_short_row_is_rejected_at_its_index(
        rows in prop::collection::vec(prop::array::uniform3(-1e3f64..1e3), 1..30),
        pick in any::<prop::sample::Index>(),
    ) {
        let p = unauthenticated_policies();
        let bad = pick.index(rows.len());
        let rows: Vec<Vec<f64>> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| if i == bad { r[..2].to_vec() } else { r.to_vec() })
            .collect();
        let body = json!({ "instances": rows }).to_string();
        let want = json!({ "error": format!("instances[{bad}]: expected 3 features, got 2") }).to_string();
        prop_assert_eq!(accept(&p, "/v1/models/m:predict", body.as_bytes()), Err(want));
    }

    #[test]
    fn a_v2_element_count_off_by_one_is_rejected(input in v2_input(), extra in any::<bool>()) {
        let p = unauthenticated_policies();
        let (datatype, shape, mut data) = input;
        if extra {
            data.push(data.first().cloned().unwrap_or(json!(true)));
        } else if data.pop().is_none() {
            return Ok(());
        }
        let body = json!({"inputs": [{"name": "x", "datatype": datatype, "shape": shape, "data": data}]}).to_string();
        let got = accept(&p, "/v2/models/free/infer", body.as_bytes());
        prop_assert!(got.as_ref().is_err_and(|e| e.contains("inputs[0].data: ")), "{got:?}");
    }

    #[test]
    fn generated_v2_payloads_pass(input in v2_input(), nested in any::<bool>()) {
        let p = unauthenticated_policies();
        let (datatype, shape, data) = input;
        let data = if nested && shape.len() == 2 && shape[1] > 0 {
            let cols = usize::try_from(shape[1]).unwrap();
            serde_json::Value::Array(data.chunks(cols).map(|c| serde_json::Value::Array(c.to_vec())).collect())
        } else {
            serde_json::Value::Array(data)
        };
        let body = json!({"inputs": [{"name": "x", "datatype": datatype, "shape": shape, "data": data}]}).to_string();
        prop_assert_eq!(accept(&p, "/v2/models/free/infer", body.as_bytes()), Ok(()));
    }
}

fn arbitrary_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        "[a-z]{0,6}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "instances",
                    "inputs",
                    "name",
                    "shape",
                    "datatype",
                    "data",
                    "model",
                    "parameters",
                    "x"
                ])
                .prop_map(str::to_owned),
                inner,
                0..5
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A datatype, a shape (rank 1 or 2, no zero-size dimension: those are refused) and matching
/// flat data that fits the datatype.
fn v2_input() -> impl Strategy<Value = (&'static str, Vec<u64>, Vec<serde_json::Value>)> {
    let shape = prop_oneof![
        (1u64..6).prop_map(|n| vec![n]),
        (1u64..4, 1u64..4).prop_map(|(a, b)| vec![a, b]),
    ];
    (
        prop::sample::select(vec![
            // No FP16 (binary extension only) or BF16 (KServe has no numpy type for it).
            "BOOL", "UINT8", "INT8", "INT16", "INT64", "UINT64", "FP32", "FP64", "BYTES",
        ]),
        shape,
    )
        .prop_flat_map(|(datatype, shape)| {
            let count = usize::try_from(shape.iter().product::<u64>()).unwrap();
            let element: BoxedStrategy<serde_json::Value> = match datatype {
                "BOOL" => any::<bool>().prop_map(serde_json::Value::from).boxed(),
                "UINT8" => any::<u8>().prop_map(serde_json::Value::from).boxed(),
                "INT8" => any::<i8>().prop_map(serde_json::Value::from).boxed(),
                "INT16" => any::<i16>().prop_map(serde_json::Value::from).boxed(),
                "INT64" => any::<i64>().prop_map(serde_json::Value::from).boxed(),
                "UINT64" => any::<u64>().prop_map(serde_json::Value::from).boxed(),
                "BYTES" => "[a-z]{0,5}".prop_map(serde_json::Value::from).boxed(),
                _ => (-1e4f64..1e4).prop_map(serde_json::Value::from).boxed(),
            };
            (
                Just(datatype),
                Just(shape),
                prop::collection::vec(element, count),
            )
        })
}

#[test]
fn a_valid_request_passes_end_to_end() {
    let p = policies(&base_config());
    let body = br#"{"instances": [[1, 2, 3, 4]]}"#;
    let ok = Req::post("/v1/models/iris:predict")
        .bearer(&token("alice", "models:iris"))
        .send(&p, body, at(NOW), &MemoryStore::new());
    assert!(ok.is_ok());
}
