//! `loadtest`: see the library's docs (`loadtest/src/lib.rs`) and BENCHMARKS.md.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = loadtest::Cli::parse();
    let json = cli.load.json;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(report) = runtime.block_on(loadtest::run(cli))? {
        if json {
            println!("{}", report.json);
        } else {
            print!("{}", report.table());
        }
    }
    Ok(())
}
