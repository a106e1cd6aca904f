//! Test helpers: manifests written to a directory of their own and translated.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Options, Translation, translate};
use crate::config::ConfigErrors;

/// A Gateway `gw/gw` with one HTTP listener that takes routes from every namespace.
pub(super) const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: gw}
spec:
  gatewayClassName: eg
  listeners: [{name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}]
";

/// Options that map every port of the Service `svc` in namespaces `ml`, `a` and `b` to the
/// discard port.
pub(super) fn serve_options() -> Options {
    Options {
        backends: ["ml", "a", "b"]
            .iter()
            .map(|ns| format!("svc.{ns}=127.0.0.1:9").parse().unwrap())
            .collect(),
        serving: true,
        ..Options::default()
    }
}

/// A fresh directory holding `manifests` (after [`GATEWAY`]) as one file.
pub(super) fn write(manifests: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "modelgate-manifests-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("manifests.yaml"),
        format!("{GATEWAY}---\n{manifests}"),
    )
    .unwrap();
    dir
}

pub(super) fn translate_text(
    manifests: &str,
    options: &Options,
) -> Result<Translation, ConfigErrors> {
    let dir = write(manifests);
    let mut options = options.clone();
    options.paths = vec![dir.clone()];
    let result = translate(&options);
    std::fs::remove_dir_all(dir).unwrap();
    result
}

/// The host's route names in the order it tries them.
pub(super) fn routes_in_order(manifests: &str, options: &Options) -> Vec<String> {
    let translation = translate_text(manifests, options).unwrap_or_else(|e| panic!("{e}"));
    translation
        .config
        .document
        .routes
        .iter()
        .map(|r| r.name.clone().unwrap_or_default())
        .collect()
}
