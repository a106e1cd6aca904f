//! Pure policy decisions for modelgate (placeholder: being written).
