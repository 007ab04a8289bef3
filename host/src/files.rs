//! The `files` import: the directories granted with `--allow-dir`, read for the
//! component's `file://` handler. A path is checked after symbolic links are resolved,
//! so a link inside a grant cannot lead outside it; outside every grant the answer is
//! `destination-denied`, whether the file exists or not.

use std::io;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use tokio::sync::{mpsc, oneshot};
use wasmtime::component::{Accessor, FutureReader, HasData, StreamReader};

use crate::bindings::roundtrip::transport::files::{Entry, File, Host, HostWithStore};
use crate::bindings::roundtrip::transport::types::ErrorCode;
use crate::error::{Error, ErrorKind};
use crate::pipes::{FramesProducer, pump_reads};
use crate::state::State;

/// `HasData` marker for the `files` interface.
pub struct Files;

impl HasData for Files {
    type Data<'a> = &'a mut State;
}

impl Host for State {}

/// The granted directories, resolved once: each must exist and be a directory.
pub fn canonical_grants(dirs: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    dirs.iter()
        .map(|dir| {
            let bad = |why: String| {
                Error::new(
                    ErrorKind::Config,
                    format!("--allow-dir {}: {why}", dir.display()),
                )
            };
            let canonical = std::fs::canonicalize(dir).map_err(|e| bad(e.to_string()))?;
            if !canonical.is_dir() {
                return Err(bad("not a directory".to_owned()));
            }
            Ok(canonical)
        })
        .collect()
}

/// What a path names, once checked against the grants.
#[derive(Debug, PartialEq, Eq)]
enum Located {
    File(PathBuf),
    Directory(PathBuf),
    Missing,
}

/// Resolves `path` and checks it lies in a grant (blocking: run off the event loop).
fn locate(grants: &[PathBuf], path: &str) -> Result<Located, ErrorCode> {
    let denied = || {
        let granted: Vec<String> = grants.iter().map(|g| g.display().to_string()).collect();
        ErrorCode::DestinationDenied(if granted.is_empty() {
            format!("reading file://{path} is not allowed: no directory is granted (--allow-dir)")
        } else {
            format!(
                "reading file://{path} is not allowed: it is outside the directories granted with --allow-dir ({})",
                granted.join(", ")
            )
        })
    };
    let inside = |p: &Path| grants.iter().any(|g| p.starts_with(g));
    let wanted = Path::new(path);
    match std::fs::canonicalize(wanted) {
        Ok(real) if !inside(&real) => Err(denied()),
        Ok(real) if real.is_dir() => Ok(Located::Directory(real)),
        Ok(real) => Ok(Located::File(real)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Missing: say so only if the nearest existing ancestor is in a grant.
            let existing = wanted
                .ancestors()
                .skip(1)
                .find_map(|a| std::fs::canonicalize(a).ok());
            match existing {
                Some(real) if inside(&real) => Ok(Located::Missing),
                _ => Err(denied()),
            }
        }
        Err(_) if grants.is_empty() => Err(denied()),
        Err(e) => Err(read_error(path, &e)),
    }
}

fn read_error(path: &str, error: &io::Error) -> ErrorCode {
    ErrorCode::ConnectionFailed(format!("open file://{path}: {error}"))
}

/// A directory's names, sorted, directories with a trailing `/`.
fn list(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let mut name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_dir() {
            name.push('/');
        }
        names.push(name);
    }
    names.sort();
    Ok(names)
}

impl<T: Send> HostWithStore<T> for Files {
    async fn open(
        accessor: &Accessor<T, Self>,
        path: String,
    ) -> wasmtime::Result<Result<Entry, ErrorCode>> {
        crate::crossings::count(crate::crossings::Crossing::HostCallAsync);
        crate::state::note_progress();
        let grants = accessor.with(|mut access| access.get().allow_dirs.clone());
        let lookup_path = path.clone();
        let located = tokio::task::spawn_blocking(move || {
            let located = locate(&grants, &lookup_path)?;
            let names = match &located {
                Located::Directory(dir) => list(dir).map_err(|e| read_error(&lookup_path, &e))?,
                _ => Vec::new(),
            };
            Ok::<_, ErrorCode>((located, names))
        })
        .await?;
        let (located, names) = match located {
            Ok(found) => found,
            Err(code) => return Ok(Err(code)),
        };
        let real = match located {
            Located::Missing => return Ok(Ok(Entry::NotFound)),
            Located::Directory(_) => return Ok(Ok(Entry::Directory(names))),
            Located::File(real) => real,
        };
        let file = match tokio::fs::File::open(&real).await {
            Ok(file) => file,
            Err(e) => return Ok(Err(read_error(&path, &e))),
        };
        let meta = match file.metadata().await {
            Ok(meta) => meta,
            Err(e) => return Ok(Err(read_error(&path, &e))),
        };
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs());
        let (chunks_tx, chunks_rx) = mpsc::channel(4);
        let (done_tx, done_rx) = oneshot::channel();
        tokio::spawn(pump_reads(file, chunks_tx, done_tx, move |e| {
            Err(read_error(&path, &e))
        }));
        accessor.with(|mut access| {
            Ok(Ok(Entry::File(File {
                size: meta.len(),
                modified,
                contents: StreamReader::new(&mut access, FramesProducer::from_channel(chunks_rx))?,
                end: FutureReader::new(&mut access, done_rx)?,
            })))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_paths_inside_a_grant_are_located() {
        let root = tempfile::tempdir().unwrap();
        let granted = root.path().join("granted");
        std::fs::create_dir_all(granted.join("sub")).unwrap();
        std::fs::write(granted.join("a.txt"), "a").unwrap();
        std::fs::write(root.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(root.path().join("secret"), granted.join("link")).unwrap();
        let grants = canonical_grants(std::slice::from_ref(&granted)).unwrap();
        let at = |p: &Path| locate(&grants, p.to_str().unwrap());
        assert!(matches!(at(&granted.join("a.txt")), Ok(Located::File(_))));
        assert!(matches!(
            at(&granted.join("sub")),
            Ok(Located::Directory(_))
        ));
        assert!(matches!(
            at(&granted.join("nope.txt")),
            Ok(Located::Missing)
        ));
        assert!(matches!(
            at(&granted.join("sub/deeper/nope")),
            Ok(Located::Missing)
        ));
        for outside in [
            root.path().join("secret"),
            root.path().join("nope"),
            granted.join("link"),
        ] {
            assert!(
                matches!(at(&outside), Err(ErrorCode::DestinationDenied(_))),
                "{outside:?}"
            );
        }
        assert!(
            matches!(locate(&[], "/etc/hostname"), Err(ErrorCode::DestinationDenied(m)) if m.contains("no directory is granted"))
        );
        assert_eq!(list(&granted).unwrap(), ["a.txt", "link", "sub/"]);
        assert!(canonical_grants(&[root.path().join("missing")]).is_err());
        assert!(canonical_grants(&[granted.join("a.txt")]).is_err());
    }
}
