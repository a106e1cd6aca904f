//! The modelgate Proxy-Wasm filter (placeholder: being written).
