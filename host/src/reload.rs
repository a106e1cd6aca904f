//! Reload on file change: the config file (or the manifests) and every file it names are polled for a new
//! modification time or size (polling needs no platform watcher and sees editors' renames).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;

use crate::shared::Shared;

type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn stamps(shared: &Shared) -> Vec<(PathBuf, Stamp)> {
    let mut files = shared.source_files();
    if let Some(snapshot) = shared.snapshot() {
        files.extend(snapshot.watched.iter().cloned());
    }
    files
        .into_iter()
        .map(|f| {
            let s = stamp(&f);
            (f, s)
        })
        .collect()
}

/// Polls until `stop` turns true; reloads when a watched file changed.
pub(crate) async fn watch_files(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut known = stamps(&shared);
    loop {
        let interval = shared
            .snapshot()
            .map_or(std::time::Duration::from_secs(1), |s| {
                s.config.reload.poll_interval.0
            });
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        let now = stamps(&shared);
        if now != known {
            log::info!("a config file or a file it names changed: reloading");
            // A failed reload is logged by `reload`; the new stamps are kept either way so a
            // broken file is not retried until it changes again.
            let _ = shared.reload().await;
            known = stamps(&shared);
        }
    }
}
