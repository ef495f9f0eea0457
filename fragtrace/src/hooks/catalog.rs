//! Every hook fragtrace knows, with its attach methods in order of preference.

/// How a program attaches. Each variant names the program in the eBPF object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// BTF-typed raw tracepoint (`tp_btf/EVENT`).
    TpBtf {
        program: &'static str,
        event: &'static str,
    },
    /// Raw tracepoint (`raw_tp/EVENT`).
    RawTp {
        program: &'static str,
        event: &'static str,
    },
    /// Classic tracepoint (`tracepoint/CATEGORY/EVENT`).
    Tracepoint {
        program: &'static str,
        category: &'static str,
        event: &'static str,
    },
}

impl Method {
    pub fn kind(&self) -> &'static str {
        match self {
            Method::TpBtf { .. } => "tp_btf",
            Method::RawTp { .. } => "raw_tp",
            Method::Tracepoint { .. } => "tracepoint",
        }
    }

    pub fn program(&self) -> &'static str {
        match self {
            Method::TpBtf { program, .. }
            | Method::RawTp { program, .. }
            | Method::Tracepoint { program, .. } => program,
        }
    }
}

#[derive(Debug)]
pub struct Hook {
    /// `category:event` for tracepoints, the function name for probes.
    pub name: &'static str,
    /// What the hook gives fragtrace, for `fragtrace probes`.
    pub purpose: &'static str,
    pub methods: &'static [Method],
}

pub const PAGE_ALLOC: Hook = Hook {
    name: "kmem:mm_page_alloc",
    purpose: "failed allocations (events) and allocations per order (counters)",
    methods: &[
        Method::TpBtf {
            program: "page_alloc_btf",
            event: "mm_page_alloc",
        },
        Method::RawTp {
            program: "page_alloc_raw",
            event: "mm_page_alloc",
        },
        Method::Tracepoint {
            program: "page_alloc_tp",
            category: "kmem",
            event: "mm_page_alloc",
        },
    ],
};

pub const ALL: &[&Hook] = &[&PAGE_ALLOC];
