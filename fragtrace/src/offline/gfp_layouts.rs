//! Historical gfp bit layouts, for logs that print only the hex mask (kernels before 4.6).
//!
//! From include/linux/gfp.h and include/trace/events/gfpflags.h (mmflags.h since 4.6):
//! - 2.6.33 to 4.3: `___GFP_WAIT` 0x10 ... `___GFP_WRITE` 0x1000000; bit 0x100000 was
//!   `___GFP_KMEMCG` in 3.8-3.14 and `___GFP_NOACCOUNT` in 4.1-4.3, unused otherwise;
//! - 4.4 to 4.9 (Mel Gorman's rework): `___GFP_RECLAIMABLE` 0x10, `___GFP_ATOMIC` 0x80000,
//!   `___GFP_DIRECT_RECLAIM` 0x400000, `___GFP_KSWAPD_RECLAIM` 0x2000000; 0x100000 is
//!   `___GFP_NOACCOUNT` in 4.4 and `___GFP_ACCOUNT` from 4.5;
//! - 4.10 on: reshuffled again, but those kernels print the names (`mode:0x..(GFP_KERNEL)`),
//!   which are used as printed.
//!
//! Composite names come first, as in the kernel's tables, so `decode` prints what ftrace of that
//! era printed. Single bits the era's table did not list (e.g. `__GFP_FS` before 4.4) are named
//! too, so no bit is left as bare hex.
use crate::decode::gfp::{GfpFlag, GfpTable};

/// The zone modifiers, identical in every layout.
pub const GFP_DMA: u64 = 0x01;
pub const GFP_HIGHMEM: u64 = 0x02;
pub const GFP_DMA32: u64 = 0x04;

/// A kernel version as `(major, minor)`.
pub type Version = (u32, u32);

/// Parses `3.10.0-514.el7.x86_64` into (3, 10).
pub fn parse_version(text: &str) -> Option<Version> {
    let mut parts = text.split(['.', '-', '_', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor_text: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor_text.parse().ok()?))
}

/// The flag names for `mask` and the layout assumed, described for the report.
pub struct Decoded {
    pub flags: Option<String>,
    pub layout: String,
}

/// Decodes a hex-only mask for the kernel `version` (None: guessed from the mask).
pub fn decode(mask: u64, version: Option<Version>) -> Decoded {
    let (version, assumed) = match version {
        Some(v) => (v, ""),
        // Kernels since 4.6 print names, so a hex-only log is older. The 4.4 layout needs
        // ___GFP_KSWAPD_RECLAIM (0x2000000) for nearly every sleeping or atomic request.
        None if mask & 0x200_0000 != 0 => (
            (4, 5),
            " (assumed from the mask: no kernel version in the log)",
        ),
        None => (
            (3, 10),
            " (assumed: no kernel version in the log; kernels since 4.6 print flag names)",
        ),
    };
    let (table, range) = match version {
        v if v < (2, 6) => {
            return Decoded {
                flags: None,
                layout: format!("unknown: no table for {}.{}", v.0, v.1),
            };
        }
        v if v < (4, 4) => (classic(v), classic_range(v)),
        v if v < (4, 10) => (
            rework_4_4(v),
            if v < (4, 5) { "4.4" } else { "4.5-4.9" }.to_string(),
        ),
        v => {
            return Decoded {
                flags: None,
                layout: format!(
                    "unknown: {}.{} prints flag names itself, and the log has none",
                    v.0, v.1
                ),
            };
        }
    };
    Decoded {
        flags: Some(table.decode(mask)),
        layout: format!("{range}{assumed}"),
    }
}

fn classic_range(v: Version) -> String {
    match v {
        v if v < (3, 8) => "2.6.33-3.7",
        v if v < (3, 15) => "3.8-3.14",
        v if v < (4, 1) => "3.15-4.0",
        _ => "4.1-4.3",
    }
    .to_string()
}

fn table(entries: &[(u64, &str)]) -> GfpTable {
    GfpTable::new(
        entries
            .iter()
            .filter(|(mask, _)| *mask != 0)
            .map(|&(mask, name)| GfpFlag {
                mask,
                name: name.to_string(),
            })
            .collect(),
    )
}

/// 2.6.33 to 4.3 (`___GFP_WAIT` = 0x10).
fn classic(v: Version) -> GfpTable {
    const MOVABLE: u64 = 0x08;
    const WAIT: u64 = 0x10;
    const HIGH: u64 = 0x20;
    const IO: u64 = 0x40;
    const FS: u64 = 0x80;
    const NOWARN: u64 = 0x200;
    const NORETRY: u64 = 0x1000;
    const COMP: u64 = 0x4000;
    const NOMEMALLOC: u64 = 0x10000;
    const HARDWALL: u64 = 0x20000;
    const RECLAIMABLE: u64 = 0x80000;
    const NO_KSWAPD: u64 = 0x400000;
    let bit20 = match v {
        v if ((3, 8)..(3, 15)).contains(&v) => "GFP_KMEMCG",
        v if (4, 1) <= v => "GFP_NOACCOUNT",
        _ => "",
    };
    let user = WAIT | IO | FS | HARDWALL;
    let highuser_movable = user | GFP_HIGHMEM | MOVABLE;
    table(&[
        (
            highuser_movable | COMP | NOMEMALLOC | NORETRY | NOWARN | NO_KSWAPD,
            "GFP_TRANSHUGE",
        ),
        (highuser_movable, "GFP_HIGHUSER_MOVABLE"),
        (user | GFP_HIGHMEM, "GFP_HIGHUSER"),
        (user, "GFP_USER"),
        (WAIT | IO | FS | RECLAIMABLE, "GFP_TEMPORARY"),
        (WAIT | IO | FS, "GFP_KERNEL"),
        (WAIT | IO, "GFP_NOFS"),
        (HIGH, "GFP_ATOMIC"),
        (WAIT, "GFP_NOIO"),
        (GFP_DMA, "GFP_DMA"),
        (GFP_HIGHMEM, "GFP_HIGHMEM"),
        (GFP_DMA32, "GFP_DMA32"),
        (IO, "GFP_IO"),
        (FS, "GFP_FS"),
        (0x100, "GFP_COLD"),
        (NOWARN, "GFP_NOWARN"),
        (0x400, "GFP_REPEAT"),
        (0x800, "GFP_NOFAIL"),
        (NORETRY, "GFP_NORETRY"),
        (if v >= (3, 6) { 0x2000 } else { 0 }, "GFP_MEMALLOC"),
        (COMP, "GFP_COMP"),
        (0x8000, "GFP_ZERO"),
        (NOMEMALLOC, "GFP_NOMEMALLOC"),
        (HARDWALL, "GFP_HARDWALL"),
        (0x40000, "GFP_THISNODE"),
        (RECLAIMABLE, "GFP_RECLAIMABLE"),
        (if bit20.is_empty() { 0 } else { 0x100000 }, bit20),
        (MOVABLE, "GFP_MOVABLE"),
        (0x200000, "GFP_NOTRACK"),
        (NO_KSWAPD, "GFP_NO_KSWAPD"),
        (0x800000, "GFP_OTHER_NODE"),
        (0x1000000, "GFP_WRITE"),
    ])
}

/// 4.4 to 4.9 (`___GFP_DIRECT_RECLAIM` = 0x400000, `___GFP_KSWAPD_RECLAIM` = 0x2000000), with
/// the names of 4.6's mmflags.h (what 4.6-4.9 print in `mode:0x..(NAMES)`).
fn rework_4_4(v: Version) -> GfpTable {
    const MOVABLE: u64 = 0x08;
    const RECLAIMABLE: u64 = 0x10;
    const HIGH: u64 = 0x20;
    const IO: u64 = 0x40;
    const FS: u64 = 0x80;
    const NOWARN: u64 = 0x200;
    const NORETRY: u64 = 0x1000;
    const COMP: u64 = 0x4000;
    const NOMEMALLOC: u64 = 0x10000;
    const HARDWALL: u64 = 0x20000;
    const ATOMIC: u64 = 0x80000;
    const ACCOUNT: u64 = 0x100000;
    const DIRECT_RECLAIM: u64 = 0x400000;
    const KSWAPD_RECLAIM: u64 = 0x2000000;
    const RECLAIM: u64 = DIRECT_RECLAIM | KSWAPD_RECLAIM;
    let account = v >= (4, 5);
    let kernel = RECLAIM | IO | FS;
    let user = kernel | HARDWALL;
    let highuser_movable = user | GFP_HIGHMEM | MOVABLE;
    table(&[
        (
            (highuser_movable | COMP | NOMEMALLOC | NORETRY | NOWARN) & !KSWAPD_RECLAIM,
            "GFP_TRANSHUGE",
        ),
        (highuser_movable, "GFP_HIGHUSER_MOVABLE"),
        (user | GFP_HIGHMEM, "GFP_HIGHUSER"),
        (user, "GFP_USER"),
        (kernel | RECLAIMABLE, "GFP_TEMPORARY"),
        (
            if account { kernel | ACCOUNT } else { 0 },
            "GFP_KERNEL_ACCOUNT",
        ),
        (kernel, "GFP_KERNEL"),
        (RECLAIM | IO, "GFP_NOFS"),
        (HIGH | ATOMIC | KSWAPD_RECLAIM, "GFP_ATOMIC"),
        (RECLAIM, "GFP_NOIO"),
        (KSWAPD_RECLAIM, "GFP_NOWAIT"),
        (GFP_DMA, "GFP_DMA"),
        (GFP_HIGHMEM, "__GFP_HIGHMEM"),
        (GFP_DMA32, "GFP_DMA32"),
        (HIGH, "__GFP_HIGH"),
        (ATOMIC, "__GFP_ATOMIC"),
        (IO, "__GFP_IO"),
        (FS, "__GFP_FS"),
        (0x100, "__GFP_COLD"),
        (NOWARN, "__GFP_NOWARN"),
        (0x400, "__GFP_REPEAT"),
        (0x800, "__GFP_NOFAIL"),
        (NORETRY, "__GFP_NORETRY"),
        (COMP, "__GFP_COMP"),
        (0x8000, "__GFP_ZERO"),
        (NOMEMALLOC, "__GFP_NOMEMALLOC"),
        (0x2000, "__GFP_MEMALLOC"),
        (HARDWALL, "__GFP_HARDWALL"),
        (0x40000, "__GFP_THISNODE"),
        (RECLAIMABLE, "__GFP_RECLAIMABLE"),
        (MOVABLE, "__GFP_MOVABLE"),
        (
            ACCOUNT,
            if account {
                "__GFP_ACCOUNT"
            } else {
                "__GFP_NOACCOUNT"
            },
        ),
        (0x200000, "__GFP_NOTRACK"),
        (0x1000000, "__GFP_WRITE"),
        (RECLAIM, "__GFP_RECLAIM"),
        (DIRECT_RECLAIM, "__GFP_DIRECT_RECLAIM"),
        (KSWAPD_RECLAIM, "__GFP_KSWAPD_RECLAIM"),
        (0x800000, "__GFP_OTHER_NODE"),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_002_mask_on_3_10() {
        let d = decode(0x10c0d0, parse_version("3.10.0-514.el7.x86_64"));
        assert_eq!(
            d.flags.as_deref(),
            Some("GFP_KERNEL|GFP_COMP|GFP_ZERO|GFP_KMEMCG")
        );
        assert_eq!(d.layout, "3.8-3.14");
    }

    #[test]
    fn same_mask_on_other_eras() {
        // Before 3.8 bit 0x100000 meant nothing.
        assert_eq!(
            decode(0x10c0d0, Some((3, 2))).flags.as_deref(),
            Some("GFP_KERNEL|GFP_COMP|GFP_ZERO|0x100000")
        );
        assert!(decode(0x10c0d0, Some((5, 4))).flags.is_none());
    }

    /// Masks with the names the kernels printed themselves (4.6-4.9 logs).
    #[test]
    fn rework_matches_printed_names() {
        for (mask, printed) in [
            (0x2084120, "GFP_ATOMIC|__GFP_COLD|__GFP_COMP"),
            (0x24000c0, "GFP_KERNEL"),
            (0x24201ca, "GFP_HIGHUSER_MOVABLE|__GFP_COLD"),
        ] {
            assert_eq!(decode(mask, Some((4, 9))).flags.as_deref(), Some(printed));
        }
    }

    #[test]
    fn guessed_layout_says_so() {
        let d = decode(0xd0, None);
        assert_eq!(d.flags.as_deref(), Some("GFP_KERNEL"));
        assert!(d.layout.starts_with("3.8-3.14 (assumed"));
        assert!(
            decode(0x24000c0, None)
                .layout
                .starts_with("4.5-4.9 (assumed")
        );
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("4.9.24-coreos"), Some((4, 9)));
        assert_eq!(parse_version("2.6.32-754.el6.x86_64"), Some((2, 6)));
        assert_eq!(parse_version("6.18rc1"), Some((6, 18)));
        assert_eq!(parse_version("x"), None);
    }
}
