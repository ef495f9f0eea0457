//! Folded stacks (`frame;frame;frame count`, root first, as flamegraph.pl and inferno read them)
//! and flamegraph SVGs drawn with inferno. Four questions, one weight each: where failures come
//! from (records and storm-mode stacks), where the node stalls (direct compaction and reclaim
//! time), who asks for high-order blocks (`--stacks-min-order`), and who fragments memory
//! (fallbacks below pageblock order).
use std::{
    collections::HashMap,
    io::{self, Write},
    path::{Path, PathBuf},
};

use clap::ValueEnum;

use crate::{
    analysis::analyzer::{Finding, Found},
    decode::event::{KernelStacks, StackCount},
};

/// What a flamegraph's widths count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Weight {
    /// Failed allocations: where failures come from.
    Failures,
    /// Microseconds of direct compaction and direct reclaim: where the node stalls.
    Stall,
    /// Successful allocations of --stacks-min-order and above: who asks for high-order blocks.
    Allocations,
    /// Migratetype fallbacks below pageblock order: who fragments memory.
    Fallbacks,
}

impl Weight {
    fn unit(self) -> &'static str {
        match self {
            Weight::Failures => "failures",
            Weight::Stall => "us",
            Weight::Allocations => "allocations",
            Weight::Fallbacks => "fallbacks",
        }
    }
}

/// The root frame of each stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Root {
    /// The task's name.
    Comm,
    /// The container (12 hex digits of its id), or `host`.
    Container,
    /// The failure's verdict (failures only).
    Verdict,
}

/// What the title says: host, kernel, time range.
pub struct Title {
    pub host: String,
    pub kernel: String,
    pub from: String,
    pub to: String,
}

/// Where the folded stacks and the SVG go, and how they are weighed and rooted.
pub struct Flamegraphs {
    pub weight: Weight,
    pub root: Root,
    pub folded: Option<PathBuf>,
    pub svg: Option<PathBuf>,
    /// Failure records, folded as they come.
    counts: HashMap<String, u64>,
}

impl Flamegraphs {
    /// From the command line; None when no output is asked for. The files are created now, so
    /// that a path that cannot be written fails before tracing starts.
    pub fn from_args(args: &crate::cli::FlamegraphArgs) -> anyhow::Result<Option<Self>> {
        use crate::error::{ExitStatus, fatal};
        if args.folded_root == Root::Verdict && args.weight != Weight::Failures {
            return Err(fatal(
                ExitStatus::Usage,
                "--folded-root verdict needs --weight failures: only failures have verdicts",
            ));
        }
        if args.folded.is_none() && args.flamegraph.is_none() {
            return Ok(None);
        }
        for path in args.folded.iter().chain(&args.flamegraph) {
            super::create_private(path).map_err(|e| {
                fatal(
                    ExitStatus::Failure,
                    format!("cannot create {}: {e}", path.display()),
                )
            })?;
        }
        Ok(Some(Self::new(
            args.weight,
            args.folded_root,
            args.folded.clone(),
            args.flamegraph.clone(),
        )))
    }

    pub fn new(weight: Weight, root: Root, folded: Option<PathBuf>, svg: Option<PathBuf>) -> Self {
        Self {
            weight,
            root,
            folded,
            svg,
            counts: HashMap::new(),
        }
    }

    /// A failure record shown by the pipeline (only failures are weighed one by one).
    pub fn finding(&mut self, f: &Finding) {
        let (Weight::Failures, Found::AllocFail { failure, context }) = (self.weight, &f.what)
        else {
            return;
        };
        let root = match self.root {
            Root::Comm => f.task.comm.clone(),
            Root::Container => container_frame(
                context
                    .container
                    .as_ref()
                    .and_then(|c| c.container_id.as_deref()),
            ),
            Root::Verdict => context.verdict.kind.as_str().to_string(),
        };
        *self
            .counts
            .entry(fold(&[&root], &failure.stack))
            .or_default() += 1;
    }

    /// The folded lines: records and the kernel's aggregations for this weight, heaviest
    /// first. `container_of` names the container of a cgroup v2 id.
    pub fn lines(
        &self,
        kernel: &KernelStacks,
        mut container_of: impl FnMut(u64) -> Option<String>,
    ) -> Vec<String> {
        let mut counts = self.counts.clone();
        // Stall time is summed in ns per folded line, then shown in whole µs: one rounding per
        // line, so a line's weight is its stalls' total (kernel entries that fold to the same
        // line are added first).
        let (aggregated, per, unit) = match self.weight {
            Weight::Failures => (&kernel.failures, count as fn(&StackCount) -> u64, 1),
            Weight::Stall => (&kernel.stalls, total_ns as fn(&StackCount) -> u64, 1000),
            Weight::Allocations => (&kernel.allocations, count as fn(&StackCount) -> u64, 1),
            Weight::Fallbacks => (&kernel.fallbacks, count as fn(&StackCount) -> u64, 1),
        };
        let mut raw: HashMap<String, u64> = HashMap::new();
        for a in aggregated {
            let root = match self.root {
                Root::Comm => a.comm.clone(),
                Root::Container => container_frame(container_of(a.cgroup_id).as_deref()),
                // Counted in storm mode: no verdict was judged.
                Root::Verdict => "unjudged (storm mode)".to_string(),
            };
            // What kind of stall or fallback it was, under the root.
            let mut roots = vec![root.as_str()];
            roots.extend(a.what.as_deref());
            *raw.entry(fold(&roots, &a.stack)).or_default() += per(a);
        }
        for (stack, value) in raw {
            let w = value / unit;
            if w > 0 {
                *counts.entry(stack).or_default() += w;
            }
        }
        let mut lines: Vec<(String, u64)> = counts.into_iter().collect();
        lines.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        lines
            .into_iter()
            .map(|(stack, n)| format!("{stack} {n}"))
            .collect()
    }

    /// Writes the folded file and the SVG where asked (mode 0600).
    pub fn write(&self, lines: &[String], title: &Title) -> io::Result<()> {
        if let Some(path) = &self.folded {
            let mut text = lines.join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            write_private(path, text.as_bytes())?;
        }
        if let Some(path) = &self.svg {
            let mut svg = Vec::new();
            let mut opts = inferno::flamegraph::Options::default();
            opts.title = format!(
                "fragtrace: {} on {} ({})",
                self.weight.unit(),
                title.host,
                title.kernel
            );
            opts.subtitle = Some(format!("{} to {}", title.from, title.to));
            opts.count_name = self.weight.unit().to_string();
            if lines.is_empty() {
                // inferno refuses an empty input; say so in the picture instead.
                opts.subtitle = Some(format!(
                    "{} to {}: nothing was counted",
                    title.from, title.to
                ));
                let empty = ["(none) 1"];
                inferno::flamegraph::from_lines(&mut opts, empty, &mut svg)
            } else {
                inferno::flamegraph::from_lines(
                    &mut opts,
                    lines.iter().map(String::as_str),
                    &mut svg,
                )
            }
            .map_err(|e| io::Error::other(format!("flamegraph: {e}")))?;
            write_private(path, &svg)?;
        }
        Ok(())
    }
}

fn count(a: &StackCount) -> u64 {
    a.count
}

fn total_ns(a: &StackCount) -> u64 {
    a.total_ns
}

fn container_frame(id: Option<&str>) -> String {
    match id {
        Some(id) => format!("container {}", &id[..id.len().min(12)]),
        None => "host".to_string(),
    }
}

/// `root;...;outermost;...;innermost`, frames without their offsets.
fn fold(roots: &[&str], stack_innermost_first: &[String]) -> String {
    let mut s = roots.iter().map(|r| clean(r)).collect::<Vec<_>>().join(";");
    if stack_innermost_first.is_empty() {
        s.push_str(";[stack not kept]");
    }
    for frame in stack_innermost_first.iter().rev() {
        s.push(';');
        s.push_str(&clean(&function(frame)));
    }
    s
}

/// `pipe_resize_ring+0x30` -> `pipe_resize_ring`; `f+0x1 [mod]` -> `f [mod]`.
fn function(frame: &str) -> String {
    match frame.split_once("+0x") {
        Some((name, rest)) => match rest.split_once(' ') {
            Some((_, module)) => format!("{name} {module}"),
            None => name.to_string(),
        },
        None => frame.to_string(),
    }
}

/// A frame may hold no `;` and no line break; a trailing count would be misread.
fn clean(frame: &str) -> String {
    frame
        .chars()
        .map(|c| if c == ';' || c.is_control() { '_' } else { c })
        .collect()
}

fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = super::create_private(path)?;
    f.write_all(bytes)?;
    f.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agg(
        comm: &str,
        stack: &[&str],
        count: u64,
        total_ns: u64,
        what: Option<&str>,
    ) -> StackCount {
        StackCount {
            comm: comm.into(),
            cgroup_id: 1,
            order: 3,
            what: what.map(Into::into),
            stack: stack.iter().map(|s| s.to_string()).collect(),
            count,
            total_ns,
        }
    }

    #[test]
    fn folds_root_first_without_offsets() {
        let stack = [
            "__alloc_pages+0x26b",
            "nf_conntrack_init_net+0x101 [nf_conntrack]",
            "copy_net_ns+0x7c",
        ];
        let kernel = KernelStacks {
            failures: vec![agg("runc:[1:CHILD]", &stack, 3, 0, None)],
            stalls: vec![agg(
                "java",
                &["compact_zone+0x1", "__alloc_pages+0x2"],
                2,
                5_500_000,
                Some("compaction"),
            )],
            ..Default::default()
        };
        let f = Flamegraphs::new(Weight::Failures, Root::Comm, None, None);
        assert_eq!(
            f.lines(&kernel, |_| None),
            vec!["runc:[1:CHILD];copy_net_ns;nf_conntrack_init_net [nf_conntrack];__alloc_pages 3"]
        );
        let stall = Flamegraphs::new(Weight::Stall, Root::Container, None, None);
        assert_eq!(
            stall.lines(&kernel, |_| Some("5b9be8c5bb12aaaa".into())),
            vec!["container 5b9be8c5bb12;compaction;__alloc_pages;compact_zone 5500"]
        );
    }

    #[test]
    fn the_svg_is_drawn_by_inferno() {
        let dir = std::env::temp_dir().join(format!("fragtrace-fg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let svg = dir.join("f.svg");
        let f = Flamegraphs::new(
            Weight::Failures,
            Root::Comm,
            Some(dir.join("f.folded")),
            Some(svg.clone()),
        );
        let title = Title {
            host: "node-1".into(),
            kernel: "6.18".into(),
            from: "a".into(),
            to: "b".into(),
        };
        f.write(&["pipe;pipe_fcntl;__alloc_pages 4".into()], &title)
            .unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(
            text.contains("pipe_fcntl") && text.contains("node-1"),
            "{text}"
        );
        f.write(&[], &title).unwrap();
        assert!(
            std::fs::read_to_string(&svg)
                .unwrap()
                .contains("nothing was counted")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
