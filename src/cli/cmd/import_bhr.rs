//! `catchd import-bhr`: an original BHR database into the store.

use clap::Args;

use crate::cli::{InputError, StoreArgs};
use crate::store::Store;

/// `catchd import-bhr`.
#[derive(Debug, Args)]
pub struct ImportBhrArgs {
    /// The BHR database, e.g. `postgres://bhr:secret@db.example.org/bhr`.
    #[arg(value_name = "URL")]
    pub url: String,

    /// Read and check everything, write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Where the configuration and database are.
    #[command(flatten)]
    pub store: StoreArgs,
}

pub(in crate::cli) fn import_bhr_cmd(a: &ImportBhrArgs) -> anyhow::Result<()> {
    use crate::store::bhr_import as import;
    if !a.url.starts_with("postgres://") && !a.url.starts_with("postgresql://") {
        return Err(InputError(format!(
            "{:?} is not a postgres:// URL (or the key=value form)",
            a.url
        ))
        .into());
    }
    let c = a.store.load()?;
    let rt = crate::runtime::build()?;
    let got = rt.block_on(import::read(&a.url))?;
    let _lock = crate::store::OwnerLock::acquire(&c.server.db)?;
    let store = Store::open(&c.server.db)?;
    let have = store.load_blocking()?;
    let writes = import::plan(&have, &got, crate::time::Time::now())
        .map_err(|e| InputError(e.to_string()))?;
    let tokens = got.users.iter().filter(|u| u.token_hash.is_some()).count();
    let summary = format!(
        "{} users ({tokens} with tokens), {} blocks, {} block entries, {} whitelist entries, \
         {} blacklisted sources",
        got.users.len(),
        got.blocks.len(),
        got.entries.len(),
        got.whitelist.len(),
        got.source_blacklist.len()
    );
    for s in &got.skipped_users {
        eprintln!("catchd: note: {s}");
    }
    if got.renumbered > 0 {
        eprintln!(
            "catchd: note: {} blocks and entries were renumbered to close gaps in BHR's ids",
            got.renumbered
        );
    }
    if a.dry_run {
        println!("would import {summary} into {}", c.server.db);
        return Ok(());
    }
    store.commit_blocking(writes)?;
    println!("imported {summary} into {}", c.server.db);
    Ok(())
}
