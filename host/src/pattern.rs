//! Regular expressions from configuration, compiled with the error a config reader names.

/// Compiles a regex, with a one-line error (the regex crate's is a multi-line drawing).
pub(crate) fn compile_regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(pattern).map_err(|e| invalid(pattern, &e.to_string()))
}

/// Compiles a regex that must match the whole subject, as Envoy's `safe_regex` does: the
/// pattern is parsed on its own first (so `a)|(b` cannot escape the anchoring group), then
/// compiled once, anchored.
pub(crate) fn whole_match(pattern: &str) -> Result<regex::Regex, String> {
    regex_syntax::Parser::new()
        .parse(pattern)
        .map_err(|e| invalid(pattern, &e.to_string()))?;
    // Past parsing only a size limit fails, named with the pattern as written.
    regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| invalid(pattern, &e.to_string()))
}

/// The last line of the regex crate's error, after the pattern as written.
fn invalid(pattern: &str, error: &str) -> String {
    let reason = error
        .lines()
        .last()
        .unwrap_or_default()
        .trim_start_matches("error: ");
    format!("invalid regex {pattern:?}: {reason}")
}
