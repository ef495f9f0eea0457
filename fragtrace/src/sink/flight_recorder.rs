//! The daemon's flight recorder: recordings (`sink::recording`) of the last minutes, kept in a
//! directory as a ring of segments. When the segment being written reaches its share of the
//! size budget, it is closed with its trailer and a new one begins; the oldest segments are
//! deleted so that the directory stays within the budget. `fragtrace report DIR` replays them
//! in order. Only files named like segments are ever deleted.
use std::{
    fs,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::Result;

use crate::{
    error::{ExitStatus, fatal},
    source::recording,
};

/// The budget is split into this many segments: deleting the oldest frees an eighth.
pub const SEGMENTS: u64 = 8;

pub struct FlightRecorder {
    dir: PathBuf,
    budget: u64,
    next_sequence: u64,
    /// The segment being written.
    current: Option<PathBuf>,
}

impl FlightRecorder {
    /// Opens `dir` (created with mode 0700 if missing) to keep at most `budget` bytes. Segments
    /// left by an earlier run stay, oldest deleted first; numbering continues after them.
    pub fn open(dir: &Path, budget: u64) -> Result<Self> {
        let name = dir.display();
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| fatal(ExitStatus::Failure, format!("cannot create {name}: {e}")))?;
        }
        let meta = fs::metadata(dir)
            .map_err(|e| fatal(ExitStatus::Failure, format!("cannot read {name}: {e}")))?;
        if !meta.is_dir() {
            return Err(fatal(
                ExitStatus::Usage,
                format!("--flight-recorder {name} is not a directory"),
            ));
        }
        // The recordings name tasks, containers and kernel addresses: root only.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| fatal(ExitStatus::Failure, format!("cannot chmod {name}: {e}")))?;
        let existing = recording::segments(dir)
            .map_err(|e| fatal(ExitStatus::Failure, format!("cannot list {name}: {e}")))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            budget,
            next_sequence: existing.last().map_or(0, |(seq, _)| seq + 1),
            current: None,
        })
    }

    /// The size at which the current segment is closed.
    pub fn segment_bytes(&self) -> u64 {
        self.budget / SEGMENTS
    }

    /// Makes room for a new segment (deleting the oldest) and names it; it becomes current.
    pub fn next_segment(&mut self) -> PathBuf {
        self.prune(self.budget.saturating_sub(self.segment_bytes()));
        let path = self.dir.join(recording::segment_name(self.next_sequence));
        self.next_sequence += 1;
        self.current = Some(path.clone());
        path
    }

    /// Whether the current segment has reached its share of the budget on disk.
    pub fn is_full(&self) -> bool {
        self.current
            .as_ref()
            .and_then(|p| fs::metadata(p).ok())
            .is_some_and(|m| m.len() >= self.segment_bytes())
    }

    /// What the segments take on disk now.
    pub fn bytes(&self) -> u64 {
        self.sizes().iter().map(|(_, size)| size).sum()
    }

    /// Deletes the oldest segments, never the current one, until the rest fit in `keep` bytes.
    fn prune(&self, keep: u64) {
        let sizes = self.sizes();
        let mut total: u64 = sizes.iter().map(|(_, size)| size).sum();
        for (path, size) in sizes {
            if total <= keep {
                break;
            }
            if Some(&path) == self.current.as_ref() {
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => total -= size,
                Err(e) => eprintln!(
                    "fragtrace: warning: flight recorder: cannot delete {}: {e}",
                    path.display()
                ),
            }
        }
    }

    /// Every segment's path and size, oldest first.
    fn sizes(&self) -> Vec<(PathBuf, u64)> {
        recording::segments(&self.dir)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(_, p)| fs::metadata(&p).ok().map(|m| (p, m.len())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fragtrace-fr-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    /// Segments of a budget's share each: the oldest go first, numbering continues across
    /// runs, and files that are not segments are never touched.
    #[test]
    fn keeps_the_newest_segments_within_the_budget() {
        let dir = scratch("ring");
        let budget = 8 << 20;
        let mut fr = FlightRecorder::open(&dir, budget).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        fs::write(dir.join("notes.txt"), "mine").unwrap();
        for _ in 0..20 {
            let path = fr.next_segment();
            fs::write(&path, vec![0u8; fr.segment_bytes() as usize]).unwrap();
            assert!(fr.is_full());
            assert!(fr.bytes() <= budget, "{} > {budget}", fr.bytes());
        }
        let kept = recording::segments(&dir).unwrap();
        let sequences: Vec<u64> = kept.iter().map(|(s, _)| *s).collect();
        assert_eq!(sequences, (12..20).collect::<Vec<_>>());
        assert!(dir.join("notes.txt").exists());

        // A new run continues the numbering and deletes the previous run's oldest first.
        let mut again = FlightRecorder::open(&dir, budget).unwrap();
        let path = again.next_segment();
        assert!(path.ends_with(recording::segment_name(20)));
        assert!(!dir.join(recording::segment_name(12)).exists());
        assert!(dir.join(recording::segment_name(13)).exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_is_not_a_directory() {
        let path = scratch("file");
        fs::write(&path, "x").unwrap();
        let err = FlightRecorder::open(&path, 8 << 20).err().unwrap();
        assert!(err.to_string().contains("is not a directory"), "{err}");
        fs::remove_file(&path).unwrap();
    }
}
