//! Symbolized stacks, resolved once per distinct stack and shared by every event that has it.
use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    ops::Deref,
    sync::{Arc, OnceLock},
};

/// Symbolized frames, innermost first. Cloning costs a reference count; hashing costs one
/// word (the hash of the frames, computed once); comparing two clones costs a pointer compare.
#[derive(Clone)]
pub struct Stack(Arc<Frames>);

struct Frames {
    frames: Box<[String]>,
    hash: u64,
    /// The frames as a JSON array, once asked for.
    json: OnceLock<Box<[u8]>>,
}

impl Stack {
    pub fn new(frames: Vec<String>) -> Self {
        // Fixed keys: equal frames hash equally in every Stack, whoever built it.
        let mut hasher = DefaultHasher::new();
        frames.hash(&mut hasher);
        let hash = hasher.finish();
        Self(Arc::new(Frames {
            frames: frames.into_boxed_slice(),
            hash,
            json: OnceLock::new(),
        }))
    }

    /// The frames as a JSON array (`["f+0x1","g+0x2"]`), serialized once per stack: they
    /// repeat in every failure of the stack.
    pub fn json(&self) -> &[u8] {
        self.0.json.get_or_init(|| {
            serde_json::to_vec(&self.0.frames)
                .expect("strings serialize")
                .into()
        })
    }
}

impl Deref for Stack {
    type Target = [String];

    fn deref(&self) -> &[String] {
        &self.0.frames
    }
}

impl From<Vec<String>> for Stack {
    fn from(frames: Vec<String>) -> Self {
        Self::new(frames)
    }
}

impl FromIterator<String> for Stack {
    fn from_iter<I: IntoIterator<Item = String>>(frames: I) -> Self {
        Self::new(frames.into_iter().collect())
    }
}

impl PartialEq for Stack {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.hash == other.0.hash && self.0.frames == other.0.frames)
    }
}

impl Eq for Stack {}

impl Hash for Stack {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.hash);
    }
}

impl PartialOrd for Stack {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Stack {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.frames.cmp(&other.0.frames)
    }
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.frames.fmt(f)
    }
}

/// Stacks already symbolized, by their raw frames. A storm repeats a handful of stacks, and
/// resolving one costs a binary search and a formatted string per frame: this makes it once
/// per distinct stack. Valid for one kallsyms generation (a recording adds symbols as it
/// goes); bounded, for the daemon.
#[derive(Default)]
pub struct StackCache {
    generation: u64,
    by_frames: HashMap<Box<[u64]>, Stack>,
}

/// Distinct stacks kept resolved; past this the cache starts over.
const MAX_CACHED_STACKS: usize = 4096;

impl StackCache {
    /// The stack of raw `frames`, resolved by `symbolize` unless it was already under this
    /// kallsyms `generation`.
    pub fn get(
        &mut self,
        frames: &[u64],
        generation: u64,
        symbolize: impl FnOnce() -> Vec<String>,
    ) -> Stack {
        if self.generation != generation || self.by_frames.len() >= MAX_CACHED_STACKS {
            self.by_frames.clear();
            self.generation = generation;
        }
        if let Some(stack) = self.by_frames.get(frames) {
            return stack.clone();
        }
        let stack = Stack::new(symbolize());
        self.by_frames.insert(frames.into(), stack.clone());
        stack
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_frames_are_one_stack_however_built() {
        let a = Stack::new(vec!["f+0x1".into(), "g+0x2".into()]);
        let b = Stack::new(vec!["f+0x1".into(), "g+0x2".into()]);
        let c = Stack::new(vec!["f+0x1".into()]);
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Equal stacks hash equally, as map keys must.
        let hash = |s: &Stack| {
            let mut h = DefaultHasher::new();
            s.hash(&mut h);
            h.finish()
        };
        assert_eq!(hash(&a), hash(&b));
    }

    #[test]
    fn cache_resolves_once_per_stack_and_generation() {
        let mut cache = StackCache::default();
        let mut calls = 0;
        let mut get = |cache: &mut StackCache, frames: &[u64], generation| {
            cache.get(frames, generation, || {
                calls += 1;
                vec![format!("{frames:?}")]
            })
        };
        let a = get(&mut cache, &[1, 2], 0);
        let again = get(&mut cache, &[1, 2], 0);
        assert!(Arc::ptr_eq(&a.0, &again.0));
        get(&mut cache, &[3], 0);
        // A symbol added since: resolved anew.
        get(&mut cache, &[1, 2], 1);
        assert_eq!(calls, 3);
    }
}
