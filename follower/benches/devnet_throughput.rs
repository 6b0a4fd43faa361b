//! How fast the devnet produces at `--state-churn 1000`, against a baseline of
//! churn 10 measured in the same run (these machines are noisy): tipsets,
//! blocks, messages and IPLD objects written per second, producing back to
//! back on an embedded store (no block-time waits).
//!
//! `cargo bench -p lotus-follower --bench devnet_throughput [-- <epochs>]`

use std::{sync::Arc, time::Instant};

use lotus_follower::{
    devnet::{Devnet, DevnetOptions, Step},
    store::embedded::EmbeddedStore,
};

#[derive(Debug, Default)]
struct Totals {
    tipsets: usize,
    blocks: usize,
    messages: usize,
    objects: usize,
    seconds: f64,
}

fn run(churn: usize, epochs: i64) -> anyhow::Result<Totals> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(EmbeddedStore::open(dir.path())?);
    let options = DevnetOptions {
        state_churn: churn,
        ..DevnetOptions::default()
    };
    let mut devnet = Devnet::open(store, options, Some(1_700_000_000))?;
    let mut totals = Totals::default();
    let started = Instant::now();
    for height in 1..=epochs {
        if let Step::Produced {
            blocks,
            messages,
            objects,
            ..
        } = devnet.produce(height)?
        {
            totals.tipsets += 1;
            totals.blocks += blocks;
            totals.messages += messages;
            totals.objects += objects;
        }
    }
    totals.seconds = started.elapsed().as_secs_f64();
    Ok(totals)
}

fn rate(count: usize, seconds: f64) -> f64 {
    count as f64 / seconds.max(1e-9)
}

fn main() -> anyhow::Result<()> {
    let epochs: i64 = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(30);
    println!("churn  tipsets/s  blocks/s  messages/s  objects/s  (over {epochs} epochs)");
    let mut results = Vec::new();
    for churn in [10, 1000] {
        let totals = run(churn, epochs)?;
        println!(
            "{churn:>5}  {:>9.1}  {:>8.1}  {:>10.0}  {:>9.0}",
            rate(totals.tipsets, totals.seconds),
            rate(totals.blocks, totals.seconds),
            rate(totals.messages, totals.seconds),
            rate(totals.objects, totals.seconds),
        );
        results.push(totals);
    }
    let (base, heavy) = (&results[0], &results[1]);
    println!(
        "churn 1000 vs 10: tipsets/s ×{:.3}, objects/s ×{:.2}, messages per tipset {} vs {}",
        rate(heavy.tipsets, heavy.seconds) / rate(base.tipsets, base.seconds),
        rate(heavy.objects, heavy.seconds) / rate(base.objects, base.seconds),
        heavy.messages / heavy.tipsets.max(1),
        base.messages / base.tipsets.max(1),
    );
    Ok(())
}
