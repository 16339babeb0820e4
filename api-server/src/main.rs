//! `terarchitect-api-server`: serves the Terarchitect API.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use terarchitect_api_server::config::{Config, LogFormat};
use terarchitect_api_server::env_file;
use tracing_subscriber::EnvFilter;

fn init_tracing(config: &Config) {
    let filter = EnvFilter::try_new(&config.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn main() -> anyhow::Result<()> {
    // The .env file is applied before clap reads its environment fallbacks, and before the
    // runtime starts any thread (setting variables is only sound while single-threaded).
    let env_file = env_file::read(Path::new(env_file::FILE_NAME), |k| {
        std::env::var_os(k).is_some()
    })
    .context("reading the .env file")?;
    if let Some(file) = &env_file {
        // SAFETY: no other thread exists yet.
        unsafe { file.apply_to_process() };
    }
    let config = Config::parse();
    init_tracing(&config);
    if let Some(file) = &env_file {
        file.log();
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    let env = Arc::new(std::env::vars().collect());
    let server = terarchitect_api_server::start(config, env)
        .await
        .context("starting the api-server")?;
    let token = server.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        token.cancel();
    });
    server.wait().await;
    Ok(())
}
