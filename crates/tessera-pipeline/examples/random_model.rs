//! Writes a random-weight tiny model folder (the shipped layout, fp16), for trying the CLI and
//! server before trained weights exist: `cargo run --release -p tessera-pipeline --example
//! random_model -- /tmp/random-tiny [SEED]`, then `tessera generate ... --model /tmp/random-tiny`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: random_model DIR [SEED]")?;
    let seed = args.next().map(|s| s.parse()).transpose()?.unwrap_or(0);
    tessera_pipeline::Model::save_random_tiny(std::path::Path::new(&dir), seed)?;
    println!("wrote a random tiny model to {dir}");
    Ok(())
}
