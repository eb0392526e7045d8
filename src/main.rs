use clap::Parser;
use slipway::config::{Cli, Command};

/// Exit code for a configuration the service cannot start with.
const EXIT_CONFIG: i32 = 2;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    init_tracing();
    let result: anyhow::Result<()> = match cli.command {
        Command::Serve(args) => slipway::serve(*args).await.map_err(anyhow::Error::from),
    };
    if let Err(err) = result {
        eprintln!("slipway: {err:#}");
        std::process::exit(EXIT_CONFIG);
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}
