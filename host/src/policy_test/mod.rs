//! `modelgate test`: policy tests that run the production `.wasm` offline.
//!
//! A test file (docs/policy-tests.md) names a policy (a plugin configuration, or an
//! `EnvoyExtensionPolicy`), test keys, a clock and cases. Each case gets a fresh plugin of the
//! real module in the runtime, a [`ManualClock`] set to the case's time, and a stub upstream
//! that echoes what it received; nothing leaves the process.
//!
//! Like the rest of the host it knows HTTP only: requests, headers, bodies, statuses, what
//! the upstream received. The one exception is `tokens`, a test fixture that signs the JWTs a
//! case describes (see its module comment).
//!
//! Modules: `suite` (the file format), `tokens` (signing test tokens), `exchange` (one request
//! through the chain and the stub upstream), `expect` (expected against actual, as a diff),
//! `run` (a file's cases), `report` (the console and `JUnit`).

mod exchange;
mod expect;
mod report;
mod run;
mod suite;
mod tokens;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use modelgate_runtime::{Clock, ManualClock, NoClusters, Runtime};

use report::FileReport;
use run::{Runner, Suite};

/// `modelgate test` arguments.
#[derive(Debug, PartialEq, Eq, Default)]
pub struct Options {
    pub paths: Vec<PathBuf>,
    /// The module under test instead of the embedded one.
    pub wasm: Option<PathBuf>,
    pub junit: Option<PathBuf>,
    /// Run only the cases whose `FILE: NAME` matches this regex.
    pub filter: Option<String>,
}

/// The module this binary embeds (host/build.rs), if it was built after `make wasm`.
mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_wasm.rs"));
}

/// Runs the tests: exit 0 when every case passed, 1 when one failed or a file is broken, 2
/// when the command itself cannot run (no module, no test files, a bad pattern).
pub fn main(options: &Options) -> ExitCode {
    match run(options, &mut std::io::stdout()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(message) => {
            eprintln!("modelgate test: {message}");
            ExitCode::from(2)
        }
    }
}

/// Runs every selected case, printing as it goes; `Ok(true)` when all passed.
pub fn run(options: &Options, out: &mut dyn std::io::Write) -> Result<bool, String> {
    let started = Instant::now();
    let filter = options
        .filter
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .map_err(|e| format!("--filter: {e}"))?;
    let wasm: Arc<[u8]> = match &options.wasm {
        Some(path) => std::fs::read(path)
            .map_err(|e| format!("--wasm: cannot read {}: {e}", path.display()))?
            .into(),
        None => embedded::MODELGATE_WASM
            .ok_or(
                "this modelgate was built without an embedded modelgate.wasm; pass --wasm FILE \
                 or rebuild after `make wasm`",
            )?
            .into(),
    };
    let files = test_files(&options.paths)?;
    let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH));
    let runtime = Runtime::with_clock(Arc::new(NoClusters), Clock::Manual(Arc::clone(&clock)))
        .map_err(|e| e.to_string())?;
    let executor = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let runner = Runner {
        runtime,
        clock,
        wasm,
        executor,
    };
    let mut reports = Vec::new();
    for file in &files {
        let shown = file.display().to_string();
        let mut report = FileReport {
            file: shown.clone(),
            cases: Vec::new(),
            error: None,
        };
        match Suite::load(file) {
            Err(error) => {
                let error = error.to_string();
                let _ = out.write_all(report::error_line(&error).as_bytes());
                report.error = Some(error);
            }
            Ok(suite) => {
                let selected: Vec<usize> = suite
                    .case_names()
                    .enumerate()
                    .filter(|(_, name)| {
                        filter
                            .as_ref()
                            .is_none_or(|f| f.is_match(&format!("{shown}: {name}")))
                    })
                    .map(|(i, _)| i)
                    .collect();
                for i in selected {
                    let result = suite.run_case(&runner, i);
                    let _ = out.write_all(report::case_line(&shown, &result).as_bytes());
                    let _ = out.flush();
                    report.cases.push(result);
                }
            }
        }
        reports.push(report);
    }
    let elapsed = started.elapsed();
    let cases: usize = reports.iter().map(|r| r.cases.len()).sum();
    let _ = writeln!(
        out,
        "\n{cases} cases in {} files, {:.2}s",
        reports.len(),
        elapsed.as_secs_f64()
    );
    let _ = out.write_all(report::summary(&reports).as_bytes());
    if let Some(path) = &options.junit {
        report::write_junit(path, &reports, elapsed)
            .map_err(|e| format!("--junit: cannot write {}: {e}", path.display()))?;
    }
    Ok(reports.iter().all(|r| r.failed() == 0))
}

/// The files named, with directories searched (recursively) for `*.test.yaml` / `*.test.yml`.
fn test_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    if paths.is_empty() {
        return Err("name at least one test file or directory".into());
    }
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let before = files.len();
            collect(path, &mut files).map_err(|e| format!("{}: {e}", path.display()))?;
            if files.len() == before {
                return Err(format!(
                    "{}: no *.test.yaml files in this directory",
                    path.display()
                ));
            }
        } else if path.exists() {
            files.push(path.clone());
        } else {
            return Err(format!("{}: no such file or directory", path.display()));
        }
    }
    Ok(files)
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(&path, files)?;
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".test.yaml") || n.ends_with(".test.yml"))
        {
            files.push(path);
        }
    }
    Ok(())
}
