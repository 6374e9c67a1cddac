//! The `flock-api` binary: `serve` (the default) runs the server; `webhooks listen` runs a local
//! receiver that verifies and prints deliveries.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use flock_api::config::Settings;
use flock_api::keys_cli::{self, CreateOptions, ListOptions, RevokeOptions};
use flock_api::listen::{self, ListenOptions};
use flock_api::startup::Application;
use flock_api::telemetry;

#[derive(Debug, Parser)]
#[command(
    name = "flock-api",
    version,
    about = "Flock: a blackboard orchestrator with signed webhook notifications"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default): 127.0.0.1:8344 unless configured otherwise.
    Serve {
        /// A TOML configuration file (else the FLOCK_CONFIG variable names one, else none).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// API keys, administered offline against the configured store.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Webhook tools.
    Webhooks {
        #[command(subcommand)]
        command: WebhooksCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key; prints it alone on the first line (it is shown this once), then its record.
    Create(CreateOptions),
    /// List keys (never a key itself).
    List(ListOptions),
    /// Revoke a key by id.
    Revoke(RevokeOptions),
}

#[derive(Debug, Subcommand)]
enum WebhooksCommand {
    /// Receive webhooks locally, verify both signatures and print one line per delivery.
    Listen(ListenOptions),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve { config: None }) {
        Command::Serve { config } => runtime.block_on(serve(config)),
        Command::Keys { command } => {
            let mut out = std::io::stdout().lock();
            runtime.block_on(async {
                match command {
                    KeysCommand::Create(options) => keys_cli::create(options, &mut out).await,
                    KeysCommand::List(options) => keys_cli::list(options, &mut out).await,
                    KeysCommand::Revoke(options) => keys_cli::revoke(options, &mut out).await,
                }
            })
        }
        Command::Webhooks {
            command: WebhooksCommand::Listen(options),
        } => runtime.block_on(listen::run(options)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    let file = Settings::file_from(config, |key| std::env::var(key).ok());
    let settings = Settings::load(file.as_deref(), std::env::vars())?;
    let _log = telemetry::setup_tracing(&settings.log).context("starting the log writer")?;
    let app = Application::build(settings).await?;
    app.run_until(shutdown_signal()).await?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot watch SIGTERM; only SIGINT stops the server");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
