//! The command line: `modelgate serve --config FILE`, `modelgate check --config FILE` and
//! `modelgate test [--wasm FILE] [--junit FILE] [--filter PATTERN] FILE_OR_DIR...` and
//! `modelgate token ...` (see [`crate::token`]).

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{Config, ConfigErrors};
use crate::policy_test;
use crate::services::GatewayServices;
use crate::snapshot::Snapshot;

pub const USAGE: &str = "usage: modelgate <serve|check> --config FILE
       modelgate test [--wasm FILE] [--junit FILE] [--filter PATTERN] FILE_OR_DIR...
       modelgate token (--key FILE | --hmac-secret-file FILE) [--claim NAME=VALUE]... [options]

  serve   run the gateway (SIGTERM drains and exits, SIGHUP reloads)
  check   parse the config, load every wasm module and run on_configure; print OK or every error
  test    run policy test files (*.test.yaml; docs/policy-tests.md) against the embedded
          modelgate.wasm (or --wasm FILE); exit 1 if a case fails
  token   mint a signed test token (`modelgate token --help` lists its options)
";

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Serve {
        config: PathBuf,
    },
    Check {
        config: PathBuf,
    },
    Test(policy_test::Options),
    Help,
    /// `modelgate token`: mint a test token.
    Token(crate::token::TokenArgs),
    /// `modelgate token --help`.
    TokenHelp,
    /// Internal: `serve` runs itself with this to compile a module in a separate process.
    CompileModule,
}

/// The argument of [`Command::CompileModule`].
pub const COMPILE_MODULE: &str = "__compile-module";

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut args = args.into_iter();
    let command = args.next().ok_or("missing command")?;
    if matches!(command.as_str(), "-h" | "--help" | "help") {
        return Ok(Command::Help);
    }
    if command == COMPILE_MODULE {
        return Ok(Command::CompileModule);
    }
    if command == "test" {
        return parse_test(args).map(Command::Test);
    }
    if command == "token" {
        let rest: Vec<String> = args.collect();
        if rest.iter().any(|a| a == "--help" || a == "-h") {
            return Ok(Command::TokenHelp);
        }
        return crate::token::parse_args(rest).map(Command::Token);
    }
    let mut config = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => {
                config = Some(PathBuf::from(args.next().ok_or("--config needs a file")?));
            }
            other => match other.strip_prefix("--config=") {
                Some(path) => config = Some(PathBuf::from(path)),
                None => return Err(format!("unexpected argument {other:?}")),
            },
        }
    }
    let config = config.ok_or("--config FILE is required")?;
    match command.as_str() {
        "serve" => Ok(Command::Serve { config }),
        "check" => Ok(Command::Check { config }),
        other => Err(format!("unknown command {other:?}")),
    }
}

/// `modelgate test` options: `--wasm`, `--junit`, `--filter` (each also as `--name=value`),
/// then the files and directories.
fn parse_test(args: impl Iterator<Item = String>) -> Result<policy_test::Options, String> {
    let mut options = policy_test::Options::default();
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => {
                (name.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let slot = match name.as_str() {
            "--wasm" => &mut options.wasm,
            "--junit" => &mut options.junit,
            "--filter" => {
                let value = inline
                    .or_else(|| args.next())
                    .ok_or("--filter needs a pattern")?;
                options.filter = Some(value);
                continue;
            }
            other if other.starts_with('-') && other.len() > 1 => {
                return Err(format!("unexpected argument {other:?}"));
            }
            _ => {
                options.paths.push(PathBuf::from(arg));
                continue;
            }
        };
        let value = inline
            .or_else(|| args.next())
            .ok_or_else(|| format!("{name} needs a file"))?;
        *slot = Some(PathBuf::from(value));
    }
    if options.paths.is_empty() {
        return Err("test needs at least one test file or directory".into());
    }
    Ok(options)
}

/// `modelgate check`: everything `serve` does before it binds sockets.
pub fn check(config_path: &std::path::Path) -> Result<(), ConfigErrors> {
    let config = Config::load(config_path)?;
    let services = Arc::new(GatewayServices::default());
    let runtime = modelgate_runtime::Runtime::new(
        Arc::clone(&services) as Arc<dyn modelgate_runtime::HostServices>
    )
    .map_err(|e| ConfigErrors(vec![format!("runtime: {e}")]))?;
    Snapshot::build(config, &runtime, &services).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_both_commands_and_config_spellings() {
        assert_eq!(
            parse(args(&["serve", "--config", "a.yaml"])),
            Ok(Command::Serve {
                config: "a.yaml".into()
            })
        );
        assert_eq!(
            parse(args(&["check", "--config=b.yaml"])),
            Ok(Command::Check {
                config: "b.yaml".into()
            })
        );
        assert_eq!(
            parse(args(&["check", "-c", "c.yaml"])),
            Ok(Command::Check {
                config: "c.yaml".into()
            })
        );
        assert_eq!(parse(args(&["--help"])), Ok(Command::Help));
    }

    #[test]
    fn parses_test_options_and_paths() {
        assert_eq!(
            parse(args(&[
                "test",
                "--junit",
                "r.xml",
                "--filter=quota",
                "a.test.yaml",
                "--wasm",
                "m.wasm",
                "dir",
            ])),
            Ok(Command::Test(policy_test::Options {
                paths: vec!["a.test.yaml".into(), "dir".into()],
                wasm: Some("m.wasm".into()),
                junit: Some("r.xml".into()),
                filter: Some("quota".into()),
            }))
        );
        assert_eq!(
            parse(args(&["test"])),
            Err("test needs at least one test file or directory".into())
        );
        assert_eq!(
            parse(args(&["test", "a", "--junit"])),
            Err("--junit needs a file".into())
        );
        assert_eq!(
            parse(args(&["test", "--verbose", "a"])),
            Err("unexpected argument \"--verbose\"".into())
        );
    }

    #[test]
    fn rejects_bad_command_lines() {
        assert_eq!(parse(args(&[])), Err("missing command".into()));
        assert_eq!(
            parse(args(&["serve"])),
            Err("--config FILE is required".into())
        );
        assert_eq!(
            parse(args(&["run", "--config", "a"])),
            Err("unknown command \"run\"".into())
        );
        assert_eq!(
            parse(args(&["serve", "--config"])),
            Err("--config needs a file".into())
        );
        assert_eq!(
            parse(args(&["serve", "--verbose"])),
            Err("unexpected argument \"--verbose\"".into())
        );
    }
}
