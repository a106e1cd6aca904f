//! The command line: `modelgate serve --config FILE` and `modelgate check --config FILE`.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{Config, ConfigErrors};
use crate::services::GatewayServices;
use crate::snapshot::Snapshot;

pub const USAGE: &str = "usage: modelgate <serve|check> --config FILE

  serve   run the gateway (SIGTERM drains and exits, SIGHUP reloads)
  check   parse the config, load every wasm module and run on_configure; print OK or every error
";

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Serve {
        config: PathBuf,
    },
    Check {
        config: PathBuf,
    },
    Help,
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
