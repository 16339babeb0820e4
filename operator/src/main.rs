//! `terarchitect-operator`: `run` the operator, or print the AgentJob `crd`.

use anyhow::Context;
use clap::Parser;
use terarchitect_operator::config::{Cli, Command, LogFormat, RunConfig};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn init_tracing(cfg: &RunConfig) {
    let filter = EnvFilter::try_new(&cfg.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match cfg.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal(token: CancellationToken) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    token.cancel();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", terarchitect_operator::crd::crd_yaml());
            Ok(())
        }
        Command::Run(cfg) => {
            init_tracing(&cfg);
            terarchitect_worker_api::ensure_crypto_provider();
            let client = kube::Client::try_default()
                .await
                .context("connecting to Kubernetes (in-cluster config or KUBECONFIG)")?;
            let shutdown = CancellationToken::new();
            tokio::spawn(shutdown_signal(shutdown.clone()));
            terarchitect_operator::run(*cfg, client, shutdown, |running| {
                tracing::info!(probes = %running.http_addr, "serving /healthz, /readyz and /metrics");
            })
            .await
            .context("running the operator")
        }
    }
}
