//! `modelgate`: the gateway binary; the logic lives in the `modelgate_host` library.

use std::process::ExitCode;

use modelgate_host::cli::{self, Command};
use modelgate_host::gateway::Gateway;

fn main() -> ExitCode {
    // Help and the version print on stdout and exit 0; a usage error exits 2.
    let command = cli::parse(std::env::args().skip(1)).unwrap_or_else(|e| e.exit());
    // A test run shows what explains a failure (the filter rejecting its config logs the
    // field path at error), not every request's info line.
    let level = if matches!(command, Command::Test(_)) {
        "warn"
    } else {
        "info"
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format(|out, record| {
            use std::io::Write as _;
            // A guest's `critical` line, as Envoy's log shows it (`log` has no such level).
            let level = if record.target() == modelgate_runtime::CRITICAL_LOG_TARGET {
                "CRITICAL".to_owned()
            } else {
                record.level().to_string()
            };
            let now = out.timestamp();
            writeln!(out, "[{now} {level} {}] {}", record.target(), record.args())
        })
        .init();
    match command {
        Command::Token(args) => {
            match modelgate_host::token::mint(&args, std::time::SystemTime::now()) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("modelgate token: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check {
            source,
            print_config,
        } => match cli::check(&source) {
            Ok(loaded) => {
                println!("OK");
                if print_config && let Some(yaml) = &loaded.host_yaml {
                    println!("# the host config {} became\n{yaml}", source.describe());
                }
                if !loaded.warnings.is_empty() {
                    println!("warnings ({}):", loaded.warnings.len());
                    for warning in &loaded.warnings {
                        println!("  {warning}");
                    }
                }
                ExitCode::SUCCESS
            }
            Err(errors) => {
                for error in &errors.0 {
                    println!("{}: {error}", source.describe());
                }
                ExitCode::FAILURE
            }
        },
        Command::Serve { source } => {
            // Cranelift then runs in a child process: its memory never joins the gateway's.
            if let Ok(program) = std::env::current_exe() {
                modelgate_runtime::compile_in_child(program, vec![cli::COMPILE_MODULE.into()]);
            }
            serve(source)
        }
        Command::Test(options) => {
            // A test run is mostly the module's compile: on every core, and cached.
            modelgate_runtime::compile_for_a_short_run();
            modelgate_host::policy_test::main(&options)
        }
        Command::CompileModule => match modelgate_runtime::serve_compile_request() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn serve(source: modelgate_host::source::ConfigSource) -> ExitCode {
    // The main thread accepts, serves the admin listener and reloads; the worker threads
    // (`concurrency`) serve the connections.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            log::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let gateway = match Gateway::start_from(source).await {
            Ok(gateway) => gateway,
            Err(e) => {
                log::error!("cannot start: {e}");
                return ExitCode::FAILURE;
            }
        };
        match gateway.run_until_signal().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                log::error!("signal handling failed: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
