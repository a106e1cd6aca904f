//! `EnvoyExtensionPolicy` `spec.wasm[]` entries as the host's `filters`, read as
//! `fromEnvoyExtensionPolicy` reads them (`plugin_source.rs`): `config` delivered to
//! `on_configure` as a JSON string, `rootID`, `failOpen`, `env.hostKeys`; each entry its own
//! VM, as Envoy Gateway gives each its own `vm_id`.
//!
//! The module is a local file (`--wasm [NAME=]FILE`) standing for `code`. For `code.type:
//! HTTP` the file must have the manifest's `sha256`, as Envoy Gateway checks the download. For
//! `code.type: Image` the `sha256` is the digest of the image manifest, not of the `.wasm`
//! inside it (deploy/oci/image-digest.py computes it), so it cannot be checked against the
//! file; that is reported.

use std::path::PathBuf;

use serde_json::{Value, json};
use sha2::Digest as _;

use super::fields::Node;
use super::gateway::Gateways;
use super::{Translator, target_refs};

pub(super) fn read(t: &Translator<'_>, gateways: &Gateways) -> Vec<Value> {
    let policies = t.of_kind("EnvoyExtensionPolicy");
    let entries: usize = policies
        .iter()
        .map(|i| {
            t.objects[*i].doc["spec"]["wasm"]
                .as_array()
                .map_or(0, Vec::len)
        })
        .sum();
    let mut filters = Vec::new();
    for index in policies {
        let object = &t.objects[index];
        let root = t.root(index);
        let Some(spec) = root.get("spec") else {
            continue;
        };
        let mut targets_routes = false;
        for target in target_refs(&spec) {
            let namespace = &object.namespace;
            if t.find(&target.kind, namespace, &target.name).is_none() {
                t.error(
                    index,
                    &target.path,
                    format!(
                        "{} {namespace}/{} is not in the manifests",
                        target.kind, target.name
                    ),
                );
            }
            if target.section.is_some() && gateways.listeners.len() > 1 {
                t.warn(
                    index,
                    &target.path,
                    "the host runs the filter on every listener",
                );
            }
            targets_routes |= target.kind != "Gateway";
        }
        if targets_routes {
            t.warn(
                index,
                "spec.targetRefs",
                "the host runs the filter on every route, not only the targeted ones",
            );
        }
        for (i, wasm) in spec.list("wasm").iter().enumerate() {
            if let Some(filter) = read_wasm(t, index, i, wasm, entries) {
                filters.push(filter);
            }
        }
    }
    filters
}

fn read_wasm(
    t: &Translator<'_>,
    index: usize,
    i: usize,
    wasm: &Node<'_>,
    entries: usize,
) -> Option<Value> {
    let object = &t.objects[index];
    let name = wasm.str("name");
    let file = local_file(t, name.as_deref(), entries);
    let code = wasm.get("code");
    let Some(file) = file else {
        t.error(
            index,
            &wasm.path_of("code"),
            format!(
                "no local module: give it with --wasm {}FILE",
                name.as_ref().map(|n| format!("{n}=")).unwrap_or_default()
            ),
        );
        return None;
    };
    if let Some(code) = &code {
        check_code(t, index, code, &file);
    }
    let mut filter = json!({
        "name": name.clone().unwrap_or_else(|| format!("envoyextensionpolicy/{}/{}/wasm/{i}", object.namespace, object.name)),
        "wasm": file,
    });
    if let Some(root_id) = wasm.str("rootID") {
        filter["rootId"] = json!(root_id);
    }
    if let Some(config) = wasm.get("config") {
        filter["config"] = config.take().clone();
    }
    if let Some(fail_open) = wasm.bool("failOpen") {
        filter["failOpen"] = json!(fail_open);
    }
    if let Some(env) = wasm.get("env") {
        let keys: Vec<String> = env.list("hostKeys").iter().filter_map(Node::text).collect();
        filter["env"] = json!({"hostKeys": keys});
    }
    Some(filter)
}

/// The `--wasm` file for the entry `name`: the one given for that name, or the one given
/// without a name when the manifests have a single entry.
fn local_file(t: &Translator<'_>, name: Option<&str>, entries: usize) -> Option<PathBuf> {
    let wasm = &t.options.wasm;
    wasm.iter()
        .find(|(n, _)| n.is_some() && n.as_deref() == name)
        .or_else(|| {
            wasm.iter()
                .find(|(n, _)| n.is_none())
                .filter(|_| entries == 1)
        })
        .map(|(_, file)| file.clone())
}

fn check_code(t: &Translator<'_>, index: usize, code: &Node<'_>, file: &std::path::Path) {
    code.accept("type");
    code.accept("pullPolicy");
    if let Some(http) = code.get("http") {
        http.accept("url");
        if let Some(expected) = http.str("sha256") {
            match std::fs::read(file) {
                Ok(bytes) => {
                    let actual = hex(&sha2::Sha256::digest(&bytes));
                    if !actual.eq_ignore_ascii_case(&expected) {
                        t.error(
                            index,
                            &http.path_of("sha256"),
                            format!("{} has sha256 {actual}, not {expected}", file.display()),
                        );
                    }
                }
                Err(e) => t.error(
                    index,
                    &http.path_of("sha256"),
                    format!("cannot read {}: {e}", file.display()),
                ),
            }
        }
    }
    if let Some(image) = code.get("image") {
        image.accept("url");
        if let Some(digest) = image.get("sha256") {
            digest.take();
            t.warn(
                index,
                digest.path(),
                format!(
                    "the image manifest's digest; {} stands for the image and is not checked against it",
                    file.display()
                ),
            );
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}
