//! A general Proxy-Wasm runtime (placeholder: being written).
