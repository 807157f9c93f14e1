//! The local bare cache (`<root>/cache`): shallow, holding the commits we
//! fetched. It must stay bounded though a sidecar fetches forever, so each
//! fetch overwrites one ref, and past `MAX_PACKS` packs the cache starts over.

use std::fs;
use std::path::Path;

use git2::Repository;

use super::SourceError;
use super::remote::io_error;

/// The one ref a fetch writes; overwriting it releases the previous commit.
pub const FETCHED_REF: &str = "refs/tyk-gitops/fetched";

/// Each fetch that brings something adds a pack. Past this many, the cache
/// is re-created (the next fetch downloads one commit's tree), which bounds
/// disk use to one full tree plus this many increments; a config repo
/// re-downloads in moments.
const MAX_PACKS: usize = 32;

/// Loose objects come only from the local transport's unpacking; same bound.
const MAX_LOOSE_DIRS: usize = 200;

/// Opens the cache, creating it when missing and re-creating it when it is
/// not a readable bare repository or has grown past its bounds.
pub fn open(dir: &Path) -> Result<Repository, SourceError> {
    if !dir.exists() {
        return init(dir);
    }
    match Repository::open_bare(dir) {
        Ok(repo) if !over_bounds(dir) => Ok(repo),
        Ok(_) => {
            tracing::info!(cache = %dir.display(), "git cache past its bounds; starting it over");
            reset(dir)
        }
        Err(err) => {
            tracing::warn!(cache = %dir.display(), error = %err, "git cache unreadable; starting it over");
            reset(dir)
        }
    }
}

/// Opens the cache for reading only: never creates or resets it.
pub fn open_existing(dir: &Path) -> Result<Repository, SourceError> {
    Repository::open_bare(dir).map_err(|err| SourceError::Cache {
        path: dir.to_path_buf(),
        message: err.message().to_string(),
    })
}

fn init(dir: &Path) -> Result<Repository, SourceError> {
    fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    // Without git's template (sample hooks, description): nothing here
    // runs hooks, and a new process spent a few ms copying them.
    let mut options = git2::RepositoryInitOptions::new();
    options.bare(true).external_template(false);
    Repository::init_opts(dir, &options).map_err(|err| SourceError::Cache {
        path: dir.to_path_buf(),
        message: err.message().to_string(),
    })
}

/// Deletes and re-creates the cache, but only a directory that is empty or
/// looks like a bare repository: a mistyped path must not lose user data.
fn reset(dir: &Path) -> Result<Repository, SourceError> {
    let looks_like_cache = dir.join("HEAD").is_file() && dir.join("objects").is_dir();
    let is_empty = fs::read_dir(dir)
        .map_err(|e| io_error(dir, e))?
        .next()
        .is_none();
    if !looks_like_cache && !is_empty {
        return Err(SourceError::Cache {
            path: dir.to_path_buf(),
            message: "exists and is not a git cache; refusing to delete it".to_string(),
        });
    }
    fs::remove_dir_all(dir).map_err(|e| io_error(dir, e))?;
    init(dir)
}

fn over_bounds(dir: &Path) -> bool {
    let objects = dir.join("objects");
    let packs = fs::read_dir(objects.join("pack"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "pack"))
                .count()
        })
        .unwrap_or(0);
    let loose_dirs = fs::read_dir(&objects)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().len() == 2)
                .count()
        })
        .unwrap_or(0);
    packs > MAX_PACKS || loose_dirs > MAX_LOOSE_DIRS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_creates_and_reopens_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        open(&cache).unwrap();
        assert!(cache.join("HEAD").is_file());
        open(&cache).unwrap();
    }

    #[test]
    fn too_many_packs_start_the_cache_over() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        open(&cache).unwrap();
        for i in 0..=MAX_PACKS {
            fs::write(cache.join(format!("objects/pack/pack-{i}.pack")), b"x").unwrap();
        }
        open(&cache).unwrap();
        assert_eq!(fs::read_dir(cache.join("objects/pack")).unwrap().count(), 0);
    }

    #[test]
    fn refuses_to_reset_a_directory_that_is_not_a_cache() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("precious.txt"), b"keep").unwrap();
        let Err(err) = open(dir.path()) else {
            panic!("a foreign directory was reset");
        };
        assert!(err.to_string().contains("not a git cache"), "{err}");
        assert!(dir.path().join("precious.txt").exists());
    }
}
