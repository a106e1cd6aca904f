//! What the runner prints (one line per case, a diff under each failure, `N passed, N failed`)
//! and the `JUnit` XML file CI systems read.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::run::CaseResult;

/// The cases of one file, or the reason the file could not run.
pub(super) struct FileReport {
    pub(super) file: String,
    pub(super) cases: Vec<CaseResult>,
    /// The file could not be loaded: it counts as one failure.
    pub(super) error: Option<String>,
}

impl FileReport {
    pub(super) fn failed(&self) -> usize {
        self.cases.iter().filter(|c| c.failure.is_some()).count()
            + usize::from(self.error.is_some())
    }

    pub(super) fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.failure.is_none()).count()
    }
}

/// The line (and diff) printed for a case as soon as it ran.
pub(super) fn case_line(file: &str, case: &CaseResult) -> String {
    match &case.failure {
        None => format!("ok     {file}: {}\n", case.name),
        Some(detail) => format!("FAILED {file}: {}\n{detail}", case.name),
    }
}

/// The line printed for a file that could not be loaded.
pub(super) fn error_line(error: &str) -> String {
    format!("FAILED {error}\n")
}

/// The closing line: `N passed, N failed`.
pub(super) fn summary(files: &[FileReport]) -> String {
    let passed: usize = files.iter().map(FileReport::passed).sum();
    let failed: usize = files.iter().map(FileReport::failed).sum();
    format!("{passed} passed, {failed} failed\n")
}

/// `JUnit` XML as Jenkins, GitLab and GitHub reporters read it: one `testsuite` per file.
pub(super) fn junit(files: &[FileReport], total: Duration) -> String {
    let tests: usize = files
        .iter()
        .map(|f| f.cases.len() + usize::from(f.error.is_some()))
        .sum();
    let failures: usize = files.iter().map(FileReport::failed).sum();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites name=\"modelgate test\" tests=\"{tests}\" failures=\"{failures}\" time=\"{:.3}\">",
        total.as_secs_f64()
    );
    for file in files {
        let time: Duration = file.cases.iter().map(|c| c.duration).sum();
        let _ = writeln!(
            xml,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" time=\"{:.3}\">",
            escape(&file.file),
            file.cases.len() + usize::from(file.error.is_some()),
            file.failed(),
            time.as_secs_f64()
        );
        if let Some(error) = &file.error {
            let _ = writeln!(
                xml,
                "    <testcase classname=\"{0}\" name=\"(load)\"><failure message=\"the test file could not be loaded\">{1}</failure></testcase>",
                escape(&file.file),
                escape(error)
            );
        }
        for case in &file.cases {
            let _ = write!(
                xml,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                escape(&file.file),
                escape(&case.name),
                case.duration.as_secs_f64()
            );
            match &case.failure {
                None => xml.push_str("/>\n"),
                Some(detail) => {
                    let message = detail.lines().next().unwrap_or_default().trim();
                    let _ = writeln!(
                        xml,
                        "><failure message=\"{}\">{}</failure></testcase>",
                        escape(message),
                        escape(detail)
                    );
                }
            }
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

pub(super) fn write_junit(
    path: &Path,
    files: &[FileReport],
    total: Duration,
) -> std::io::Result<()> {
    std::fs::write(path, junit(files, total))
}

/// XML text and attribute escaping; characters XML 1.0 cannot carry become U+FFFD.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reports() -> Vec<FileReport> {
        vec![
            FileReport {
                file: "a.test.yaml".into(),
                cases: vec![
                    CaseResult {
                        name: "routes <iris>".into(),
                        duration: Duration::from_millis(2),
                        failure: None,
                    },
                    CaseResult {
                        name: "quota".into(),
                        duration: Duration::from_millis(3),
                        failure: Some("    status\n      - 429\n      + 200\n".into()),
                    },
                ],
                error: None,
            },
            FileReport {
                file: "b.test.yaml".into(),
                cases: Vec::new(),
                error: Some("b.test.yaml: tests[0].expect: unknown field `x`".into()),
            },
        ]
    }

    #[test]
    fn the_summary_counts_cases_and_broken_files() {
        assert_eq!(summary(&reports()), "1 passed, 2 failed\n");
    }

    #[test]
    fn junit_has_one_suite_per_file_and_escapes() {
        let xml = junit(&reports(), Duration::from_millis(10));
        assert!(
            xml.contains(
                "<testsuites name=\"modelgate test\" tests=\"3\" failures=\"2\" time=\"0.010\">"
            ),
            "{xml}"
        );
        assert!(
            xml.contains("name=\"routes &lt;iris&gt;\" time=\"0.002\"/>"),
            "{xml}"
        );
        assert!(
            xml.contains(
                "<failure message=\"status\">    status\n      - 429\n      + 200\n</failure>"
            ),
            "{xml}"
        );
        assert!(xml.contains("unknown field `x`</failure>"), "{xml}");
    }

    #[test]
    fn case_lines() {
        let r = reports();
        assert_eq!(case_line("a", &r[0].cases[0]), "ok     a: routes <iris>\n");
        assert!(case_line("a", &r[0].cases[1]).starts_with("FAILED a: quota\n    status\n"));
    }
}
