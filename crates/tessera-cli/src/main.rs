//! `tessera`: the command-line front end. Parses flags, dispatches to the library crates and maps
//! errors to exit codes in one place; no model or media logic lives here.

mod cmd;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

// glibc's allocator returns large tensor buffers to the OS and zeroes fresh pages on every op;
// mimalloc keeps freed pages for reuse, so tensor-heavy loops stop paying for page faults.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "Text-to-video diffusion: generate, train and evaluate video models"
)]
#[command(propagate_version = true)]
struct Cli {
    /// Log level filter, e.g. `info`, `debug`, `tessera_models=trace` (also read from RUST_LOG).
    #[arg(long, global = true, default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Text (or image) to video: `tessera generate "a red ball bounces" -o out.mp4`.
    Generate(cmd::generate::GenerateArgs),
    /// Add frames after (--forward) or before (--backward) a video.
    Extend(cmd::generate::ExtendArgs),
    /// Generate a transition from the end of A into the start of B.
    Connect(cmd::generate::ConnectArgs),
    /// Change a video to follow a prompt (SDEdit, --strength 0..1).
    Edit(cmd::generate::EditArgs),
    /// Synthetic "shapes world" training data with captions and ground-truth tracks.
    #[command(subcommand)]
    World(cmd::world::WorldCommand),
    /// Train the VAE or the diffusion transformer.
    #[command(subcommand)]
    Train(cmd::train::TrainCommand),
    /// Video autoencoder tools.
    #[command(subcommand)]
    Vae(cmd::vae::VaeCommand),
    /// Score a model (or any folder of videos) on prompt following and physics.
    Eval(cmd::eval::EvalArgs),
    /// Make a key for signing provenance manifests (--signing-key).
    Keygen(cmd::keygen::KeygenArgs),
    /// Check files for Tessera's invisible watermark and provenance manifest.
    Detect(cmd::detect::DetectArgs),
    /// Serve the OpenAI Videos API (POST /v1/videos, …) and a web gallery over a model.
    Serve(cmd::serve::ServeArgs),
}

fn main() -> std::process::ExitCode {
    // A closed pipe (`tessera … --json | head`) ends the process quietly, as it does any Unix
    // tool, instead of `println!` panicking; files are complete before anything is printed.
    #[cfg(unix)]
    // SAFETY: restores the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    tessera_models::kernels::prefer_rayon_over_candle_pool();
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cli.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Generate(a) => cmd::generate::run_generate(a),
        Command::Extend(a) => cmd::generate::run_extend(a),
        Command::Connect(a) => cmd::generate::run_connect(a),
        Command::Edit(a) => cmd::generate::run_edit(a),
        Command::World(c) => cmd::world::run(c),
        Command::Train(c) => cmd::train::run(c),
        Command::Vae(c) => cmd::vae::run(c),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Serve(a) => cmd::serve::run(a),
        Command::Detect(a) => cmd::detect::run(a),
        Command::Keygen(a) => cmd::keygen::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", causes(&err));
            std::process::ExitCode::from(1)
        }
    }
}

/// The error and its causes, each said once: most library errors already put their source in
/// their own message, which `{:#}` would repeat.
fn causes(err: &anyhow::Error) -> String {
    let mut said = String::new();
    for cause in err.chain() {
        let m = cause.to_string();
        if !said.contains(&m) {
            if !said.is_empty() {
                said += ": ";
            }
            said += &m;
        }
    }
    said
}
