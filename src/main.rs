use std::io::Read;

use anyhow::Context;
use clap::Parser;

use slipway::config::{Cli, Command, HookCommand, RetentionCommand};
use slipway::setup;

/// Exit code for a configuration the service cannot start with.
const EXIT_CONFIG: i32 = 2;
/// Exit code for a set-up command that failed.
const EXIT_FAILED: i32 = 1;

fn main() {
    // Before the runtime starts its threads: this may set environment variables.
    slipway::config::secrets_from_dir();
    run();
}

#[tokio::main]
async fn run() {
    let cli = Cli::try_parse().unwrap_or_else(|err| exit_on_usage_error(err));
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
        Command::Hook(HookCommand::Install(args)) => (hook_install(&args).await, EXIT_FAILED),
        Command::Keygen(args) => (keygen(&args), EXIT_FAILED),
        Command::Retention(RetentionCommand::Plan(args)) => {
            (retention_plan(*args).await, EXIT_FAILED)
        }
    };
    if let Err(err) = result {
        eprintln!("slipway: {err:#}");
        std::process::exit(code);
    }
}

/// Help and version go out as clap writes them; a usage error becomes the
/// one-line reason operators and scripts expect, with exit code 2.
fn exit_on_usage_error(err: clap::Error) -> ! {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        err.exit();
    }
    let line = match (err.kind(), err.get(ContextKind::InvalidArg)) {
        (ErrorKind::MissingRequiredArgument, Some(ContextValue::Strings(args))) => {
            let options: Vec<String> = args.iter().map(|a| with_env_name(a)).collect();
            format!("missing required option {}", options.join(", "))
        }
        _ => err
            .render()
            .to_string()
            .lines()
            .next()
            .unwrap_or("invalid command line")
            .trim_start_matches("error: ")
            .to_string(),
    };
    eprintln!("slipway: {line}");
    std::process::exit(EXIT_CONFIG);
}

/// `--webhook-secret <WEBHOOK_SECRET>` → `--webhook-secret (or SLIPWAY_WEBHOOK_SECRET)`.
fn with_env_name(arg: &str) -> String {
    let flag = arg.split_whitespace().next().unwrap_or(arg);
    let env = format!(
        "SLIPWAY_{}",
        flag.trim_start_matches('-')
            .replace('-', "_")
            .to_uppercase()
    );
    format!("{flag} (or {env})")
}

fn certs(args: &slipway::config::CertsArgs) -> anyhow::Result<()> {
    let written = setup::certs::write(&args.out, &args.hosts, args.force)?;
    for file in written.files {
        println!("wrote {}", file.display());
    }
    Ok(())
}

fn keygen(args: &slipway::config::KeygenArgs) -> anyhow::Result<()> {
    for file in slipway::signing::keys::write_pair(&args.out, args.force)? {
        println!("wrote {}", file.display());
    }
    Ok(())
}

async fn retention_plan(args: slipway::config::RetentionPlanArgs) -> anyhow::Result<()> {
    print!("{}", slipway::retention::plan_command(args).await?);
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

async fn hook_install(args: &slipway::config::HookInstallArgs) -> anyhow::Result<()> {
    println!("{}", setup::hook::install(args).await?);
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
