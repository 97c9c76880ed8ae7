//! The `fleethub` command: `serve` (the default) runs the hub, `token` mints a
//! token, `migrate` prepares the database.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use fleethub::auth::{Authenticator, Role};
use fleethub::config::Settings;
use fleethub::startup::Application;
use fleethub::telemetry;
use secrecy::ExposeSecret;

// glibc malloc gives each worker thread an arena it grows and trims with
// mprotect and page faults on the hot path; mimalloc keeps per-thread pages.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "fleethub", version, about = "Real-time fleet-tracking hub")]
struct Cli {
    /// Configuration file layered over the defaults (environment variables still win).
    #[arg(long, global = true, env = "FLEETHUB_CONFIG")]
    config: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub (the default).
    Serve {
        /// Also run N simulated drivers (default 300) so the map comes alive at once.
        #[cfg(feature = "demo")]
        #[arg(long, num_args = 0..=1, default_missing_value = "300")]
        demo: Option<usize>,
    },
    /// Print a signed token (needs FLEETHUB_JWT_SECRET).
    Token {
        #[arg(long)]
        role: Role,
        #[arg(long)]
        sub: String,
        #[arg(long)]
        fleet: Option<String>,
        /// Lifetime, e.g. 30m, 24h, 7d.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Apply the database migrations and exit.
    Migrate,
    /// Exit 0 when the local hub answers `/healthz` (for container health checks).
    Healthcheck,
}

fn main() -> ExitCode {
    telemetry::init();
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fleethub: {e}");
            return ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve {
        #[cfg(feature = "demo")]
        demo: None,
    });
    let result = match command {
        #[cfg(feature = "demo")]
        Command::Serve { demo } => serve(settings, demo),
        #[cfg(not(feature = "demo"))]
        Command::Serve {} => serve(settings, None),
        Command::Token {
            role,
            sub,
            fleet,
            ttl,
        } => token(&settings, role, &sub, fleet.as_deref(), ttl),
        Command::Migrate => migrate(settings),
        Command::Healthcheck => healthcheck(&settings),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleethub: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn serve(settings: Settings, demo: Option<usize>) -> anyhow::Result<()> {
    // One thread for the trail writer and housekeeping, `workers` (by default
    // half the cores) for the connections: few threads, few cross-thread wake-ups.
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings).await?;
        #[cfg(feature = "demo")]
        if let Some(drivers) = demo {
            fleethub::demo::start(&app, drivers);
        }
        #[cfg(not(feature = "demo"))]
        let _: Option<usize> = demo;
        app.run_until_stopped().await
    })
}

fn token(
    settings: &Settings,
    role: Role,
    sub: &str,
    fleet: Option<&str>,
    ttl: Duration,
) -> anyhow::Result<()> {
    let secret = settings.jwt_secret.expose_secret();
    anyhow::ensure!(
        !secret.is_empty(),
        "FLEETHUB_JWT_SECRET is not set: a dev-mode hub makes its own secret and prints its own token"
    );
    anyhow::ensure!(
        role == Role::Admin || fleet.is_some(),
        "--fleet is required for driver and dispatcher tokens"
    );
    let token = Authenticator::new(secret.as_bytes()).issue(sub, role, fleet, ttl)?;
    println!("{token}");
    Ok(())
}

fn migrate(settings: Settings) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        fleethub::trails::store::migrate(&settings).await?;
        println!("migrations applied");
        Ok(())
    })
}

fn healthcheck(settings: &Settings) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let mut addr = settings.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip([127, 0, 0, 1].into());
    }
    let timeout = Duration::from_secs(2);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    anyhow::ensure!(
        response.starts_with("HTTP/1.1 200"),
        "unhealthy: {}",
        response.lines().next().unwrap_or("")
    );
    Ok(())
}
