//! Every hook fragtrace knows, with its attach methods in order of preference.

/// How a program attaches. Each variant names the program(s) in the eBPF object.
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
    /// kprobe on a kernel function.
    Kprobe {
        program: &'static str,
        function: &'static str,
    },
    /// kprobe on entry plus kretprobe on return of the same function.
    KprobeKretprobe {
        entry: &'static str,
        exit: &'static str,
        function: &'static str,
    },
    /// fexit on a kernel function.
    Fexit {
        program: &'static str,
        function: &'static str,
    },
    /// fentry plus fexit on the same function.
    FentryFexit {
        entry: &'static str,
        exit: &'static str,
        function: &'static str,
    },
}

impl Method {
    pub fn kind(&self) -> &'static str {
        match self {
            Method::TpBtf { .. } => "tp_btf",
            Method::RawTp { .. } => "raw_tp",
            Method::Tracepoint { .. } => "tracepoint",
            Method::Kprobe { .. } => "kprobe",
            Method::KprobeKretprobe { .. } => "kretprobe",
            Method::Fexit { .. } => "fexit",
            Method::FentryFexit { .. } => "fexit",
        }
    }

    /// The programs this method loads and attaches, in order.
    pub fn programs(&self) -> Vec<&'static str> {
        match *self {
            Method::TpBtf { program, .. }
            | Method::RawTp { program, .. }
            | Method::Tracepoint { program, .. }
            | Method::Kprobe { program, .. }
            | Method::Fexit { program, .. } => vec![program],
            Method::KprobeKretprobe { entry, exit, .. }
            | Method::FentryFexit { entry, exit, .. } => {
                vec![entry, exit]
            }
        }
    }

    /// The kernel function hooked, for probes on functions.
    pub fn function(&self) -> Option<&'static str> {
        match *self {
            Method::Kprobe { function, .. }
            | Method::KprobeKretprobe { function, .. }
            | Method::Fexit { function, .. }
            | Method::FentryFexit { function, .. } => Some(function),
            _ => None,
        }
    }

    /// `fexit(__kmem_cache_create_args)` style label, for methods on functions.
    pub fn label(&self) -> String {
        match self.function() {
            Some(f) => format!("{}({f})", self.kind()),
            None => self.kind().to_string(),
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
    /// Attached only when asked for with this option, because of what it costs the node.
    pub opt_in: Option<OptIn>,
}

/// A hook that tracing leaves out unless its option is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptIn {
    pub option: &'static str,
    pub cost: &'static str,
}

/// The netns syscall windows: any program on a `syscalls:` tracepoint switches every task to the
/// syscall-tracing slow path.
pub const NETNS_SYSCALLS: OptIn = OptIn {
    option: "--netns-syscalls",
    cost: "every system call on the node takes the syscall-tracing slow path \
           (getppid 191 -> 269 ns measured on 6.18)",
};

/// A tracepoint hooked by tp_btf, else raw_tp (arguments by position).
macro_rules! btf_or_raw {
    ($name:literal, $event:literal, $btf:literal, $raw:literal, $purpose:literal) => {
        Hook {
            name: $name,
            purpose: $purpose,
            methods: &[
                Method::TpBtf {
                    program: $btf,
                    event: $event,
                },
                Method::RawTp {
                    program: $raw,
                    event: $event,
                },
            ],
            opt_in: None,
        }
    };
}

/// A syscall tracepoint (fixed record layout, no BTF needed).
macro_rules! syscall {
    ($name:literal, $event:literal, $program:literal) => {
        Hook {
            name: $name,
            purpose: "netns creation windows (CLONE_NEWNET): latency, result, failures inside",
            methods: &[Method::Tracepoint {
                program: $program,
                category: "syscalls",
                event: $event,
            }],
            opt_in: Some(NETNS_SYSCALLS),
        }
    };
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
    opt_in: None,
};

pub const ALL: &[Hook] = &[
    PAGE_ALLOC,
    btf_or_raw!(
        "kmem:mm_page_alloc_extfrag",
        "mm_page_alloc_extfrag",
        "extfrag_btf",
        "extfrag_raw",
        "migratetype fallbacks (counters), fragmenting when below pageblock order"
    ),
    btf_or_raw!(
        "compaction:mm_compaction_try_to_compact_pages",
        "mm_compaction_try_to_compact_pages",
        "compact_try_btf",
        "compact_try_raw",
        "direct compaction: order, gfp, priority"
    ),
    btf_or_raw!(
        "compaction:mm_compaction_begin",
        "mm_compaction_begin",
        "compact_begin_btf",
        "compact_begin_raw",
        "compaction pass start (stall time)"
    ),
    Hook {
        name: "compaction:mm_compaction_end",
        purpose: "compaction pass end: status (stall time)",
        methods: &[Method::Tracepoint {
            program: "compact_end_tp",
            category: "compaction",
            event: "mm_compaction_end",
        }],
        opt_in: None,
    },
    btf_or_raw!(
        "compaction:mm_compaction_deferred",
        "mm_compaction_deferred",
        "compact_deferred_btf",
        "compact_deferred_raw",
        "compactions deferred (counter)"
    ),
    btf_or_raw!(
        "compaction:mm_compaction_kcompactd_wake",
        "mm_compaction_kcompactd_wake",
        "kcompactd_wake_btf",
        "kcompactd_wake_raw",
        "kcompactd wakeups (counter)"
    ),
    btf_or_raw!(
        "oom:compact_retry",
        "compact_retry",
        "compact_retry_btf",
        "compact_retry_raw",
        "the allocator's decision to retry compaction"
    ),
    btf_or_raw!(
        "vmscan:mm_vmscan_direct_reclaim_begin",
        "mm_vmscan_direct_reclaim_begin",
        "reclaim_begin_btf",
        "reclaim_begin_raw",
        "direct reclaim start: order, gfp (stall time)"
    ),
    btf_or_raw!(
        "vmscan:mm_vmscan_direct_reclaim_end",
        "mm_vmscan_direct_reclaim_end",
        "reclaim_end_btf",
        "reclaim_end_raw",
        "direct reclaim end: pages reclaimed (stall time)"
    ),
    Hook {
        name: "oom:mark_victim",
        purpose: "OOM kills",
        methods: &[Method::Tracepoint {
            program: "oom_mark_victim",
            category: "oom",
            event: "mark_victim",
        }],
        opt_in: None,
    },
    syscall!(
        "syscalls:sys_enter_unshare",
        "sys_enter_unshare",
        "netns_enter_unshare"
    ),
    syscall!(
        "syscalls:sys_exit_unshare",
        "sys_exit_unshare",
        "netns_exit_unshare"
    ),
    syscall!(
        "syscalls:sys_enter_clone",
        "sys_enter_clone",
        "netns_enter_clone"
    ),
    syscall!(
        "syscalls:sys_exit_clone",
        "sys_exit_clone",
        "netns_exit_clone"
    ),
    syscall!(
        "syscalls:sys_enter_clone3",
        "sys_enter_clone3",
        "netns_enter_clone3"
    ),
    syscall!(
        "syscalls:sys_exit_clone3",
        "sys_exit_clone3",
        "netns_exit_clone3"
    ),
    syscall!(
        "syscalls:sys_enter_setns",
        "sys_enter_setns",
        "netns_enter_setns"
    ),
    syscall!(
        "syscalls:sys_exit_setns",
        "sys_exit_setns",
        "netns_exit_setns"
    ),
    Hook {
        name: "warn_alloc",
        purpose: "failures that print `page allocation failure` (variadic: kprobe only)",
        methods: &[Method::Kprobe {
            program: "warn_alloc_kprobe",
            function: "warn_alloc",
        }],
        opt_in: None,
    },
    Hook {
        name: "kmem_cache_create",
        purpose: "slab cache creation failures, with the cache name",
        methods: &[
            Method::Fexit {
                program: "slab_create_args_fexit",
                function: "__kmem_cache_create_args",
            },
            Method::Fexit {
                program: "slab_create_usercopy_fexit",
                function: "kmem_cache_create_usercopy",
            },
            Method::KprobeKretprobe {
                entry: "slab_create_kprobe",
                exit: "slab_create_kretprobe",
                function: "__kmem_cache_create_args",
            },
            Method::KprobeKretprobe {
                entry: "slab_create_kprobe",
                exit: "slab_create_kretprobe",
                function: "kmem_cache_create_usercopy",
            },
        ],
        opt_in: None,
    },
    COPY_NET_NS,
];

pub const COPY_NET_NS: Hook = Hook {
    name: "copy_net_ns",
    purpose: "the precise netns creation window: latency, errors",
    methods: &[
        Method::FentryFexit {
            entry: "copy_net_ns_fentry",
            exit: "copy_net_ns_fexit",
            function: "copy_net_ns",
        },
        Method::KprobeKretprobe {
            entry: "copy_net_ns_kprobe",
            exit: "copy_net_ns_kretprobe",
            function: "copy_net_ns",
        },
    ],
    opt_in: None,
};
