//! Regular expressions from configuration, compiled with the error a config reader names.

/// Compiles a regex, with a one-line error (the regex crate's is a multi-line drawing).
pub(crate) fn compile_regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(pattern).map_err(|e| {
        let text = e.to_string();
        let reason = text
            .lines()
            .last()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_owned();
        format!("invalid regex {pattern:?}: {reason}")
    })
}
