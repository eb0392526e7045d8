use std::io::Read;

use anyhow::Context;
use clap::Parser;
use slipway::config::{Cli, Command};
use slipway::setup;

/// Exit code for a configuration the service cannot start with.
const EXIT_CONFIG: i32 = 2;
/// Exit code for a set-up command that failed.
const EXIT_FAILED: i32 = 1;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let (result, code) = match cli.command {
        Command::Serve(args) => {
            init_tracing();
            (
                slipway::serve(*args).await.map_err(anyhow::Error::from),
                EXIT_CONFIG,
            )
        }
        Command::Certs(args) => (certs(&args), EXIT_FAILED),
        Command::RegistryUser(args) => (registry_user(&args.name), EXIT_FAILED),
        Command::TunnelUrl(args) => (tunnel_url(&args.ngrok_api).await, EXIT_FAILED),
    };
    if let Err(err) = result {
        eprintln!("slipway: {err:#}");
        std::process::exit(code);
    }
}

fn certs(args: &slipway::config::CertsArgs) -> anyhow::Result<()> {
    let written = setup::certs::write(&args.out, &args.hosts, args.force)?;
    for file in written.files {
        println!("wrote {}", file.display());
    }
    Ok(())
}

fn registry_user(name: &str) -> anyhow::Result<()> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading the password from standard input")?;
    println!("{}", setup::registry_user::htpasswd_line(name, &input)?);
    Ok(())
}

async fn tunnel_url(api: &str) -> anyhow::Result<()> {
    println!("{}", setup::tunnel::public_url(api).await?);
    Ok(())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}
