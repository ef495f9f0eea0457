//! Loads the embedded eBPF object and attaches each hook with the first method this kernel
//! accepts. A hook that cannot attach is reported with the reason of each method tried; the
//! others keep working.
use std::path::Path;

use anyhow::{Context, Result};
use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{BtfTracePoint, ProgramError, RawTracePoint, TracePoint},
};

use super::{
    catalog::{self, Hook, Method},
    preflight,
};
use crate::{
    decode::tracefs::EventFormat,
    error::{ExitStatus, fatal},
};

static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fragtrace"));

/// The outcome of one attach method.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub method: Method,
    /// `None` when it attached.
    pub error: Option<String>,
}

/// What happened to one hook.
#[derive(Debug, Clone)]
pub struct HookStatus {
    pub hook: &'static Hook,
    pub attempts: Vec<Attempt>,
}

impl HookStatus {
    /// The method in use, if any attached.
    pub fn attached(&self) -> Option<Method> {
        self.attempts
            .iter()
            .find(|a| a.error.is_none())
            .map(|a| a.method)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode<'a> {
    /// Stop at the first method that attaches (tracing).
    FirstWorking,
    /// Try every method of every hook (`fragtrace probes`).
    EveryMethod,
    /// Use only methods of this kind (`tp_btf`, `raw_tp`, `tracepoint`): tests the fallbacks.
    Only(&'a str),
}

/// A loaded object with its attached programs; dropping it detaches everything.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub hooks: Vec<HookStatus>,
    /// The `kmem/mm_page_alloc` format, when tracefs has it (gfp names come from it).
    pub page_alloc_format: Result<EventFormat, String>,
}

/// Callers check privileges first ([`preflight::require_privileges`]).
pub fn load(tracefs: &Path, mode: Mode<'_>) -> Result<Loaded> {
    preflight::raise_memlock_limit();
    let btf = preflight::kernel_btf();
    let page_alloc_format =
        EventFormat::read(tracefs, "kmem", "mm_page_alloc").map_err(|e| format!("{e:#}"));

    let mut loader = EbpfLoader::new();
    loader.btf(btf.as_ref().ok());
    let own_pid = std::process::id();
    loader.override_global("FRAGTRACE_TGID", &own_pid, true);
    // Offsets for the classic tracepoint program; only it reads them.
    let mut offsets: Vec<(&'static str, u32)> = Vec::new();
    if let Ok(format) = &page_alloc_format {
        let field = |name| format.field(name).map(|f| (f.offset, f.size));
        if let (Ok(pfn), Ok(order), Ok(gfp), Ok(mt)) = (
            field("pfn"),
            field("order"),
            field("gfp_flags"),
            field("migratetype"),
        ) {
            offsets = vec![
                ("TP_PFN_OFFSET", pfn.0),
                ("TP_ORDER_OFFSET", order.0),
                ("TP_GFP_OFFSET", gfp.0),
                ("TP_GFP_SIZE", gfp.1),
                ("TP_MIGRATETYPE_OFFSET", mt.0),
            ];
        }
    }
    for (name, value) in &offsets {
        loader.override_global(name, value, true);
    }
    let mut ebpf = loader.load(EBPF_OBJECT).map_err(|e| {
        fatal(
            ExitStatus::Unsupported,
            format!(
                "the kernel refused fragtrace's eBPF maps: {}",
                first_line(&e)
            ),
        )
    })?;

    let mut hooks = Vec::new();
    for hook in catalog::ALL {
        let mut attempts = Vec::new();
        for &method in hook.methods {
            if matches!(mode, Mode::Only(kind) if kind != method.kind()) {
                continue;
            }
            let error = attach(
                &mut ebpf,
                method,
                &btf,
                &page_alloc_format,
                offsets.is_empty(),
            )
            .err();
            let ok = error.is_none();
            attempts.push(Attempt { method, error });
            if ok && mode != Mode::EveryMethod {
                break;
            }
        }
        hooks.push(HookStatus { hook, attempts });
    }
    Ok(Loaded {
        ebpf,
        hooks,
        page_alloc_format,
    })
}

fn attach(
    ebpf: &mut Ebpf,
    method: Method,
    btf: &Result<Btf, String>,
    format: &Result<EventFormat, String>,
    offsets_missing: bool,
) -> Result<(), String> {
    let program = ebpf
        .program_mut(method.program())
        .ok_or_else(|| format!("program {} missing from the eBPF object", method.program()))?;
    let res: Result<(), ProgramError> = match method {
        Method::TpBtf { event, .. } => {
            let btf = btf.as_ref().map_err(Clone::clone)?;
            let p: &mut BtfTracePoint = program.try_into().map_err(|e| first_line(&e))?;
            p.load(event, btf).and_then(|()| p.attach().map(drop))
        }
        Method::RawTp { event, .. } => {
            let p: &mut RawTracePoint = program.try_into().map_err(|e| first_line(&e))?;
            p.load().and_then(|()| p.attach(event).map(drop))
        }
        Method::Tracepoint {
            category, event, ..
        } => {
            if let Err(e) = format {
                return Err(format!("tracefs format unreadable: {e}"));
            }
            if offsets_missing {
                return Err("tracefs format lacks the expected fields".into());
            }
            let p: &mut TracePoint = program.try_into().map_err(|e| first_line(&e))?;
            p.load().and_then(|()| p.attach(category, event).map(drop))
        }
    };
    res.map_err(|e| explain(&e))
}

/// A short reason for a refused program: the error chain's first lines, not the verifier log.
fn explain(err: &ProgramError) -> String {
    let text = first_line(err);
    if text.contains("Operation not permitted") || text.contains("os error 1)") {
        format!("refused: EPERM ({text})")
    } else {
        text
    }
}

fn first_line(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    let line = text.lines().next().unwrap_or_default();
    line.chars().take(240).collect()
}

impl Loaded {
    /// Fails with every reason given when no hook attached at all.
    pub fn require_any_attached(&self) -> Result<()> {
        if self.hooks.iter().any(|h| h.attached().is_some()) {
            return Ok(());
        }
        let reasons: Vec<String> = self
            .hooks
            .iter()
            .flat_map(|h| {
                h.attempts.iter().map(move |a| {
                    format!(
                        "{} via {}: {}",
                        h.hook.name,
                        a.method.kind(),
                        a.error.as_deref().unwrap_or("?")
                    )
                })
            })
            .collect();
        Err(fatal(
            ExitStatus::Unsupported,
            format!(
                "no hook could attach on this kernel ({})",
                reasons.join("; ")
            ),
        ))
    }

    pub fn take_map(&mut self, name: &str) -> Result<aya::maps::Map> {
        self.ebpf
            .take_map(name)
            .with_context(|| format!("map {name} missing from the eBPF object"))
    }
}
