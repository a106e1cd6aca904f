//! Embeds the filter build `make wasm` made, when there is one, so `modelgate test` runs the
//! production `modelgate.wasm` without a `--wasm` argument.
//!
//! The module is read from `$CARGO_TARGET_DIR` (default: the workspace's `target/`) at
//! `modelgate.wasm`, the artifact `scripts/build-wasm.sh` optimises with wasm-opt (not cargo's
//! intermediate build under `wasm32-wasip1/`); `MODELGATE_WASM` names another file. Without one the
//! binary embeds nothing and `modelgate test` asks for `--wasm`. The host build does not
//! build the filter itself: a build script running cargo on another target would nest two
//! builds over one target directory.

use std::path::PathBuf;

fn main() {
    println!("cargo::rerun-if-env-changed=MODELGATE_WASM");
    println!("cargo::rerun-if-env-changed=CARGO_TARGET_DIR");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let wasm = std::env::var_os("MODELGATE_WASM").map_or_else(
        || {
            std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| manifest_dir.join("../target"), PathBuf::from)
                .join("modelgate.wasm")
        },
        PathBuf::from,
    );
    // Also when it does not exist yet: Cargo then re-runs this script until it does.
    println!("cargo::rerun-if-changed={}", wasm.display());
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let code = match std::fs::copy(&wasm, out_dir.join("modelgate.wasm")) {
        Ok(_) => "Some(include_bytes!(concat!(env!(\"OUT_DIR\"), \"/modelgate.wasm\")))",
        Err(_) => "None",
    };
    let source = format!(
        "/// `modelgate.wasm` as built when this binary was, if it had been built.\n\
         pub(super) const MODELGATE_WASM: Option<&[u8]> = {code};\n"
    );
    if let Err(e) = std::fs::write(out_dir.join("embedded_wasm.rs"), source) {
        panic!(
            "cannot write {}: {e}",
            out_dir.join("embedded_wasm.rs").display()
        );
    }
}
