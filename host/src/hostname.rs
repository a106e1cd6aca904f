//! Hostnames as a config writes them: a virtual host's domain (a listener's `hostname`, a
//! route's `hostnames`) and the exact host of a redirect or rewrite.

/// A hostname for a redirect or rewrite: a name, with no wildcard.
pub(crate) fn check_exact(host: &str) -> Result<(), String> {
    if host.starts_with('*') {
        return Err(format!("{host:?}: a wildcard is not a host"));
    }
    check_domain(host)
}

/// A hostname as a virtual host's domain: `*`, a name, or a name after a leading `*`
/// (`*.example.com`), without a port. Envoy also takes prefix wildcards (`example.*`);
/// Gateway API hostnames have none, so they are refused here.
pub(crate) fn check_domain(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("must not be empty".to_owned());
    }
    let name = host.strip_prefix('*').unwrap_or(host);
    if host != "*" && name.is_empty() {
        return Err(format!("{host:?}: a wildcard needs a suffix"));
    }
    if name.contains('*') {
        return Err(format!(
            "{host:?}: only a leading wildcard is supported (`*.example.com` or `*`)"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(format!(
            "{host:?}: {c:?} is not allowed (a hostname has no port, path or spaces)"
        ));
    }
    Ok(())
}
