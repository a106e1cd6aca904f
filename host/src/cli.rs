//! The command line, parsed by clap: `modelgate serve|check --config FILE`, `modelgate
//! serve|check --manifests PATH... [--backend ...] [--listener ...] [--wasm ...] [--admin ...] [--ratelimit-redis ...]`
//! (docs/manifests.md), `modelgate test
//! [--wasm FILE] [--junit FILE] [--filter PATTERN] FILE_OR_DIR...`, `modelgate token ...` (see
//! [`crate::token`]), `--version`, `help [COMMAND]` and `COMMAND --help`. A usage error exits
//! with status 2 (clap's), naming the flag it would have expected.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{ArgMatches, Args as _, FromArgMatches, Parser, Subcommand};

use crate::config::{ConfigErrorKind, ConfigErrors};
use crate::manifests::{self, BackendMapping};
use crate::policy_test;
use crate::snapshot::Snapshot;
use crate::source::{ConfigSource, Loaded};
use crate::token::{ClaimArg, KeyFile, TokenArgs};

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Serve {
        source: ConfigSource,
    },
    Check {
        source: ConfigSource,
        /// Also print the host config the manifests became.
        print_config: bool,
    },
    Test(policy_test::Options),
    /// `modelgate token`: mint a test token.
    Token(TokenArgs),
    /// Internal: `serve` runs itself with this to compile a module in a separate process.
    CompileModule,
}

/// The argument of [`Command::CompileModule`].
pub const COMPILE_MODULE: &str = "__compile-module";

/// The program name clap shows in usage and help, whatever `argv[0]` was.
const PROGRAM: &str = "modelgate";

/// Parses the arguments after the program name. The error is clap's: `Error::exit` prints it
/// (help and the version on stdout with status 0, a usage error on stderr with status 2).
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, clap::Error> {
    let cli = Cli::try_parse_from(std::iter::once(PROGRAM.to_owned()).chain(args))?;
    Ok(match cli.command {
        Sub::Serve(args) => Command::Serve {
            source: args.into_source(true),
        },
        Sub::Check(CheckArgs {
            source,
            print_config,
        }) => Command::Check {
            source: source.into_source(false),
            print_config,
        },
        Sub::Test(test) => Command::Test(policy_test::Options {
            paths: test.paths,
            wasm: test.wasm,
            junit: test.junit,
            filter: test.filter,
        }),
        Sub::Token(TokenCommand(args)) => Command::Token(args),
        Sub::CompileModule => Command::CompileModule,
    })
}

#[derive(Parser)]
#[command(
    name = PROGRAM,
    version,
    about = "A local Envoy stand-in that runs Proxy-Wasm filters (modelgate.wasm) in front of upstream clusters"
)]
struct Cli {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Subcommand)]
enum Sub {
    /// Run the gateway (SIGTERM drains and exits, SIGHUP reloads)
    #[command(override_usage = "modelgate serve --config <FILE>\n       \
        modelgate serve --manifests <PATH>... [--backend <SERVICE.NAMESPACE[:PORT]=HOST:PORT>]... \
        [--listener <NAME=HOST:PORT>]... [--wasm <[NAME=]FILE>]... [--admin <HOST:PORT>] \
        [--ratelimit-redis <HOST:PORT>]")]
    Serve(SourceArgs),
    /// Parse the config, load every wasm module and run `on_configure`; print OK (and what the
    /// manifests hold that is not emulated) or every error
    #[command(override_usage = "modelgate check --config <FILE>\n       \
        modelgate check --manifests <PATH>... [--print-config] [--backend ...]... [--wasm ...]...")]
    Check(CheckArgs),
    /// Run policy test files (*.test.yaml; docs/policy-tests.md); exit 1 if a case fails
    Test(TestArgs),
    /// Mint a signed test token (prints it); iat is now unless given
    Token(TokenCommand),
    /// Internal: compile one module for `serve`, which runs itself with this.
    #[command(name = COMPILE_MODULE, hide = true)]
    CompileModule,
}

#[derive(clap::Args)]
struct SourceArgs {
    /// The host config (docs/host-config.md)
    #[arg(
        short,
        long,
        value_name = "FILE",
        required_unless_present = "manifests"
    )]
    config: Option<PathBuf>,
    /// Kubernetes manifests instead (files, directories, kustomizations; docs/manifests.md)
    #[arg(long, value_name = "PATH", num_args = 1.., conflicts_with = "config")]
    manifests: Vec<PathBuf>,
    /// Where a Service is on this machine (without PORT: every port of it)
    #[arg(
        long,
        value_name = "SERVICE.NAMESPACE[:PORT]=HOST:PORT",
        conflicts_with = "config"
    )]
    backend: Vec<BackendMapping>,
    /// The local address of a Gateway listener (default: any free port, logged)
    #[arg(long, value_name = "NAME=HOST:PORT", conflicts_with = "config", value_parser = listener_address)]
    listener: Vec<(String, std::net::SocketAddr)>,
    #[arg(
        long,
        value_name = "[NAME=]FILE",
        conflicts_with = "config",
        value_parser = wasm_file,
        help = "The local module of an EnvoyExtensionPolicy wasm entry (NAME may be left out when there is one)"
    )]
    wasm: Vec<(Option<String>, PathBuf)>,
    #[arg(
        long,
        value_name = "HOST:PORT",
        conflicts_with = "config",
        help = "The admin listener's address (/ready, /metrics, /config_dump)"
    )]
    admin: Option<std::net::SocketAddr>,
    #[arg(
        long,
        value_name = "HOST:PORT",
        conflicts_with = "config",
        help = "The Redis a BackendTrafficPolicy's global rate limit counts in (Envoy Gateway's rateLimit.backend.redis.url)"
    )]
    ratelimit_redis: Option<String>,
}

impl SourceArgs {
    /// `serving`: for `serve`, where a Service without a local address is an error.
    fn into_source(self, serving: bool) -> ConfigSource {
        match self.config {
            Some(config) => ConfigSource::File(config),
            None => ConfigSource::Manifests(manifests::Options {
                paths: self.manifests,
                backends: self.backend,
                listeners: self.listener,
                wasm: self.wasm,
                admin: self.admin,
                ratelimit_redis: self.ratelimit_redis,
                serving,
            }),
        }
    }
}

#[derive(clap::Args)]
struct CheckArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Print the host config the manifests become (YAML)
    #[arg(long, conflicts_with = "config")]
    print_config: bool,
}

/// `--listener NAME=HOST:PORT`.
fn listener_address(text: &str) -> Result<(String, std::net::SocketAddr), String> {
    let (name, address) = name_value(text)?;
    let address = address
        .parse()
        .map_err(|e| format!("the address {address:?}: {e}"))?;
    Ok((name, address))
}

/// `--wasm [NAME=]FILE`.
#[expect(
    clippy::unnecessary_wraps,
    reason = "clap's value_parser takes a function that can fail"
)]
fn wasm_file(text: &str) -> Result<(Option<String>, PathBuf), String> {
    Ok(match text.split_once('=') {
        Some((name, file)) => (Some(name.to_owned()), file.into()),
        None => (None, text.into()),
    })
}

#[derive(clap::Args)]
struct TestArgs {
    /// Test files and directories of them
    #[arg(required = true, value_name = "FILE_OR_DIR")]
    paths: Vec<PathBuf>,
    /// The module under test instead of the embedded modelgate.wasm
    #[arg(long, value_name = "FILE")]
    wasm: Option<PathBuf>,
    // `help` rather than a doc comment: the help text has no Markdown backticks.
    #[arg(long, value_name = "FILE", help = "Also write a JUnit XML report here")]
    junit: Option<PathBuf>,
    /// Run only the cases whose `FILE: NAME` matches this regex
    #[arg(long, value_name = "PATTERN")]
    filter: Option<String>,
}

#[derive(clap::Args)]
struct TokenCli {
    /// Private key: PEM (RSA, EC P-256/P-384, Ed25519) or a private JWK
    #[arg(long, value_name = "FILE", conflicts_with = "hmac_secret_file")]
    key: Option<PathBuf>,
    /// HMAC secret: the file's bytes as they are
    #[arg(long, value_name = "FILE")]
    hmac_secret_file: Option<PathBuf>,
    #[arg(
        long,
        value_name = "ALG",
        help = "Signing algorithm (default: RS256, ES256/ES384, EdDSA or HS256 after the key)"
    )]
    alg: Option<String>,
    /// The header's kid (default: the JWK's kid, if any)
    #[arg(long, value_name = "KID")]
    kid: Option<String>,
    /// Claims as one JSON object (repeatable; merged with --claim in command-line order)
    #[arg(long, value_name = "JSON|@FILE")]
    claims: Vec<String>,
    /// One claim, VALUE as JSON when it parses, else as a string (repeatable)
    #[arg(long, value_name = "NAME=VALUE", value_parser = name_value)]
    claim: Vec<(String, String)>,
    /// exp = now + DURATION (30s, 15m, 1h) unless exp is given
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = crate::units::parse_duration)]
    expires_in: Duration,
}

impl TokenCli {
    /// The token's arguments, with `--claims` and `--claim` in the order they were given (a
    /// later one overrides an earlier claim of the same name).
    fn into_args(self, matches: &ArgMatches) -> Result<TokenArgs, String> {
        let key = match (self.key, self.hmac_secret_file) {
            (Some(path), _) => KeyFile::Key(path),
            (None, Some(path)) => KeyFile::HmacSecret(path),
            (None, None) => return Err("one of --key and --hmac-secret-file is required".into()),
        };
        let positions = |id: &str| matches.indices_of(id).into_iter().flatten();
        let objects = positions("claims").zip(self.claims.into_iter().map(ClaimArg::Object));
        let ones = positions("claim").zip(
            self.claim
                .into_iter()
                .map(|(name, value)| ClaimArg::One(name, value)),
        );
        let mut claims: Vec<(usize, ClaimArg)> = objects.chain(ones).collect();
        claims.sort_by_key(|(position, _)| *position);
        Ok(TokenArgs {
            key,
            algorithm: self.alg,
            kid: self.kid,
            claims: claims.into_iter().map(|(_, claim)| claim).collect(),
            expires_in: self.expires_in,
        })
    }
}

/// `modelgate token`'s arguments as [`TokenArgs`]: clap parses [`TokenCli`], then
/// [`TokenCli::into_args`] orders the claims by position, which only the `ArgMatches` know.
struct TokenCommand(TokenArgs);

impl clap::Args for TokenCommand {
    fn augment_args(command: clap::Command) -> clap::Command {
        TokenCli::augment_args(command)
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        TokenCli::augment_args_for_update(command)
    }
}

impl FromArgMatches for TokenCommand {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        TokenCli::from_arg_matches(matches)?
            .into_args(matches)
            .map(Self)
            .map_err(|message| {
                // Formatted here, so that the usage line shown is `token`'s.
                TokenCli::augment_args(clap::Command::new("token"))
                    .bin_name(format!("{PROGRAM} token"))
                    .error(ErrorKind::MissingRequiredArgument, message)
            })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

/// `--claim NAME=VALUE`.
fn name_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .ok_or_else(|| "not NAME=VALUE".to_owned())
}

/// `modelgate check`: everything `serve` does before it binds sockets. The loaded config
/// comes back with what the manifests hold that is not emulated.
pub fn check(source: &ConfigSource) -> Result<Loaded, ConfigErrors> {
    let loaded = source.load()?;
    let config = loaded.config.clone();
    let runtime = modelgate_runtime::Runtime::new(Arc::new(modelgate_runtime::NoClusters))
        .map_err(|e| ConfigErrors::one(ConfigErrorKind::Internal, format!("runtime: {e}")))?;
    Snapshot::build(config, &runtime)?;
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn parsed(list: &[&str]) -> Command {
        parse(args(list)).unwrap_or_else(|e| panic!("{list:?}: {e}"))
    }

    /// The error for `list`: its kind and the text `modelgate` prints.
    fn refused(list: &[&str]) -> (ErrorKind, String) {
        let error = parse(args(list)).expect_err("refused");
        (error.kind(), error.to_string())
    }

    #[test]
    fn parses_both_commands_and_config_spellings() {
        for (list, config) in [
            (&["serve", "--config", "a.yaml"][..], "a.yaml"),
            (&["serve", "-c", "a.yaml"], "a.yaml"),
        ] {
            assert_eq!(
                parsed(list),
                Command::Serve {
                    source: ConfigSource::File(config.into())
                }
            );
        }
        assert_eq!(
            parsed(&["check", "--config=b.yaml"]),
            Command::Check {
                source: ConfigSource::File("b.yaml".into()),
                print_config: false,
            }
        );
        assert_eq!(parsed(&[COMPILE_MODULE]), Command::CompileModule);
    }

    #[test]
    fn parses_manifests_and_their_local_addresses() {
        let Command::Serve {
            source: ConfigSource::Manifests(options),
        } = parsed(&[
            "serve",
            "--manifests",
            "deploy",
            "overlay",
            "--backend",
            "iris-predictor.ml:80=127.0.0.1:9000",
            "--listener",
            "https=127.0.0.1:8443",
            "--wasm",
            "m.wasm",
            "--wasm",
            "other=o.wasm",
            "--admin",
            "127.0.0.1:9901",
            "--ratelimit-redis",
            "127.0.0.1:6379",
        ])
        else {
            panic!("not serve --manifests");
        };
        assert_eq!(options.paths, [PathBuf::from("deploy"), "overlay".into()]);
        assert_eq!(options.backends[0].service, "iris-predictor");
        assert_eq!(options.backends[0].port, Some(80));
        assert_eq!(
            options.listeners,
            [("https".to_owned(), "127.0.0.1:8443".parse().unwrap())]
        );
        assert_eq!(
            options.wasm,
            [
                (None, PathBuf::from("m.wasm")),
                (Some("other".to_owned()), "o.wasm".into())
            ]
        );
        assert_eq!(options.admin, Some("127.0.0.1:9901".parse().unwrap()));
        assert_eq!(options.ratelimit_redis.as_deref(), Some("127.0.0.1:6379"));
        let Command::Check { print_config, .. } =
            parsed(&["check", "--manifests", "d", "--print-config"])
        else {
            panic!("not check");
        };
        assert!(print_config);
        for list in [
            &["serve", "--config", "a", "--manifests", "d"][..],
            &["serve", "--config", "a", "--backend", "s.n=127.0.0.1:1"],
            &["check", "--manifests", "d", "--backend", "svc=127.0.0.1:1"],
            &["serve", "--manifests", "d", "--listener", "https"],
        ] {
            let error = parse(args(list)).expect_err("refused");
            assert_eq!(error.exit_code(), 2, "{list:?}: {error}");
        }
    }

    #[test]
    fn parses_test_options_and_paths() {
        assert_eq!(
            parsed(&[
                "test",
                "--junit",
                "r.xml",
                "--filter=quota",
                "a.test.yaml",
                "--wasm",
                "m.wasm",
                "dir",
            ]),
            Command::Test(policy_test::Options {
                paths: vec!["a.test.yaml".into(), "dir".into()],
                wasm: Some("m.wasm".into()),
                junit: Some("r.xml".into()),
                filter: Some("quota".into()),
            })
        );
        assert_eq!(
            refused(&["test"]).0,
            ErrorKind::MissingRequiredArgument,
            "test needs at least one file or directory"
        );
        assert_eq!(
            refused(&["test", "a", "--junit"]).0,
            ErrorKind::InvalidValue
        );
        assert_eq!(
            refused(&["test", "--verbose", "a"]).0,
            ErrorKind::UnknownArgument
        );
    }

    #[test]
    fn token_claims_keep_their_command_line_order() {
        let Command::Token(token) = parsed(&[
            "token",
            "--claim",
            "sub=alice",
            "--hmac-secret-file",
            "s",
            "--claims",
            r#"{"sub":"bob"}"#,
            "--claim",
            "n=1",
            "--kid",
            "k",
        ]) else {
            panic!("not a token command");
        };
        assert_eq!(
            token,
            TokenArgs {
                key: KeyFile::HmacSecret("s".into()),
                algorithm: None,
                kid: Some("k".into()),
                claims: vec![
                    ClaimArg::One("sub".into(), "alice".into()),
                    ClaimArg::Object(r#"{"sub":"bob"}"#.into()),
                    ClaimArg::One("n".into(), "1".into()),
                ],
                expires_in: Duration::from_hours(1),
            }
        );
    }

    #[test]
    fn rejects_bad_command_lines() {
        assert_eq!(
            refused(&[]).0,
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        assert_eq!(refused(&["serve"]).0, ErrorKind::MissingRequiredArgument);
        assert_eq!(
            refused(&["run", "--config", "a"]).0,
            ErrorKind::InvalidSubcommand
        );
        assert_eq!(refused(&["serve", "--config"]).0, ErrorKind::InvalidValue);
        assert_eq!(
            refused(&["serve", "--verbose"]).0,
            ErrorKind::UnknownArgument
        );
        for list in [&["serve"][..], &["run"], &["serve", "--verbose"]] {
            let error = parse(args(list)).expect_err("refused");
            assert_eq!(error.exit_code(), 2, "{list:?} is a usage error");
        }
    }

    #[test]
    fn a_mistyped_flag_or_command_gets_a_suggestion() {
        let (kind, text) = refused(&["serve", "--confg", "a.yaml"]);
        assert_eq!(kind, ErrorKind::UnknownArgument);
        assert!(
            text.contains("tip: a similar argument exists: '--config'"),
            "{text}"
        );
        let (_, text) = refused(&["token", "--hmac-secret", "s"]);
        assert!(text.contains("'--hmac-secret-file'"), "{text}");
        let (kind, text) = refused(&["chek", "-c", "a.yaml"]);
        assert_eq!(kind, ErrorKind::InvalidSubcommand);
        assert!(
            text.contains("tip: a similar subcommand exists: 'check'"),
            "{text}"
        );
    }

    #[test]
    fn version_and_help_per_command() {
        let (kind, text) = refused(&["--version"]);
        assert_eq!(kind, ErrorKind::DisplayVersion);
        assert_eq!(text, format!("modelgate {}\n", env!("CARGO_PKG_VERSION")));
        let (kind, top) = refused(&["--help"]);
        assert_eq!(kind, ErrorKind::DisplayHelp);
        for command in ["serve", "check", "test", "token"] {
            assert!(
                top.contains(&format!("\n  {command} ")),
                "{command} in {top}"
            );
        }
        assert!(
            !top.contains(COMPILE_MODULE),
            "the internal command stays hidden"
        );
        for (command, flags) in [
            (
                "serve",
                &[
                    "--config <FILE>",
                    "--manifests <PATH>...",
                    "--backend <SERVICE.NAMESPACE[:PORT]=HOST:PORT>",
                ][..],
            ),
            (
                "check",
                &["--config <FILE>", "--manifests <PATH>...", "--print-config"],
            ),
            (
                "test",
                &["--wasm <FILE>", "--junit <FILE>", "--filter <PATTERN>"],
            ),
            (
                "token",
                &[
                    "--key <FILE>",
                    "--hmac-secret-file <FILE>",
                    "--claim <NAME=VALUE>",
                ],
            ),
        ] {
            let (kind, help) = refused(&["help", command]);
            assert_eq!(kind, ErrorKind::DisplayHelp);
            assert_eq!(refused(&[command, "--help"]).1, help, "help {command}");
            assert!(
                help.contains(&format!("Usage: modelgate {command} ")),
                "{help}"
            );
            for flag in flags {
                assert!(help.contains(flag), "{flag} in {help}");
            }
        }
    }
}
