//! `tessera keygen FILE`: a new Ed25519 key for signing provenance manifests.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Where to write the key (owner-only permissions; an existing file is never replaced).
    file: PathBuf,
}

pub fn run(a: KeygenArgs) -> Result<()> {
    let key = tessera_safety::SigningKey::create(&a.file)?;
    println!(
        "wrote {}; public key {}",
        a.file.display(),
        key.public_hex()
    );
    println!(
        "sign with --signing-key {} (or TESSERA_SIGNING_KEY); publish the public key",
        a.file.display()
    );
    Ok(())
}
