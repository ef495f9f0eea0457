//! Historical gfp bit layouts, for logs that print only the hex mask (kernels before 4.6).
//!
//! From include/linux/gfp.h and include/trace/events/gfpflags.h (mmflags.h since 4.6):
//! - 2.6.33 to 4.3: `___GFP_WAIT` 0x10 ... `___GFP_WRITE` 0x1000000; bit 0x100000 was
//!   `___GFP_KMEMCG` in 3.8-3.14 and `___GFP_NOACCOUNT` in 4.1-4.3, unused otherwise;
//! - 4.4 to 4.9 (Mel Gorman's rework): `___GFP_RECLAIMABLE` 0x10, `___GFP_ATOMIC` 0x80000,
//!   `___GFP_DIRECT_RECLAIM` 0x400000, `___GFP_KSWAPD_RECLAIM` 0x2000000; 0x100000 is
//!   `___GFP_NOACCOUNT` in 4.4 and `___GFP_ACCOUNT` from 4.5;
//! - 4.10 to 4.14: `___GFP_OTHER_NODE` gone, `___GFP_WRITE` 0x800000, `___GFP_KSWAPD_RECLAIM`
//!   0x1000000 (`___GFP_NOLOCKDEP` 0x2000000 with CONFIG_LOCKDEP from 4.12);
//! - 4.15 to 4.17: `___GFP_COLD` (0x100) and `___GFP_NOTRACK` (0x200000) removed, nothing moved;
//! - 4.18 to 5.0: `___GFP_WRITE` 0x100, `___GFP_DIRECT_RECLAIM` 0x200000,
//!   `___GFP_KSWAPD_RECLAIM` 0x400000 (GFP_KERNEL is 0x6000c0);
//! - 5.1 on: reordered (`___GFP_ZERO` 0x100 ... `___GFP_ACCOUNT` 0x400000; GFP_KERNEL is 0xcc0);
//!   6.3 removed `___GFP_ATOMIC` (0x200). The bits above `___GFP_ACCOUNT` (ZEROTAGS, SKIP_KASAN,
//!   NOLOCKDEP, NO_OBJ_EXT) depend on the kernel's config and version, so they print as `bitN`.
//!
//! Since 4.6 the kernel prints the names itself (`mode:0x..(GFP_KERNEL)`) and those are used as
//! printed; these tables serve the hex-only masks people quote.
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
            let (layout, range) = modern(v);
            return Decoded {
                flags: Some(layout.decode(mask)),
                layout: format!("{range}{assumed}"),
            };
        }
    };
    Decoded {
        flags: Some(name_unknown_bits(table.decode(mask))),
        layout: format!("{range}{assumed}"),
    }
}

/// A bit no name covers prints as `bitN`, never as a guessed name.
fn name_unknown_bits(decoded: String) -> String {
    decoded
        .split('|')
        .map(
            |part| match part.strip_prefix("0x").map(|h| u64::from_str_radix(h, 16)) {
                Some(Ok(bits)) => bit_names(bits),
                _ => part.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("|")
}

fn bit_names(bits: u64) -> String {
    (0..64)
        .filter(|b| bits & (1u64 << b) != 0)
        .map(|b| format!("bit{b}"))
        .collect::<Vec<_>>()
        .join("|")
}

/// A 4.10+ layout: its table and the bits whose meaning does not depend on the config.
struct Modern {
    table: GfpTable,
    stable: u64,
}

impl Modern {
    fn decode(&self, mask: u64) -> String {
        let known = mask & self.stable;
        let mut parts = Vec::new();
        if known != 0 || mask == 0 {
            parts.push(name_unknown_bits(self.table.decode(known)));
        }
        let rest = mask & !self.stable;
        if rest != 0 {
            parts.push(bit_names(rest));
        }
        parts.join("|")
    }
}

/// The 4.10+ layouts, from include/linux/gfp.h (gfp_types.h since 6.0) and the names of
/// include/trace/events/mmflags.h of each era.
fn modern(v: Version) -> (Modern, &'static str) {
    // (name, bit) of the single flags that exist in this era.
    let mut singles: Vec<(&'static str, u64)> = vec![
        ("__GFP_DMA", 0x01),
        ("__GFP_HIGHMEM", 0x02),
        ("__GFP_DMA32", 0x04),
        ("__GFP_MOVABLE", 0x08),
        ("__GFP_RECLAIMABLE", 0x10),
        ("__GFP_HIGH", 0x20),
        ("__GFP_IO", 0x40),
        ("__GFP_FS", 0x80),
    ];
    let range;
    if v < (5, 1) {
        let repeat = if v < (4, 13) {
            "__GFP_REPEAT"
        } else {
            "__GFP_RETRY_MAYFAIL"
        };
        singles.extend([
            ("__GFP_NOWARN", 0x200),
            (repeat, 0x400),
            ("__GFP_NOFAIL", 0x800),
            ("__GFP_NORETRY", 0x1000),
            ("__GFP_MEMALLOC", 0x2000),
            ("__GFP_COMP", 0x4000),
            ("__GFP_ZERO", 0x8000),
            ("__GFP_NOMEMALLOC", 0x10000),
            ("__GFP_HARDWALL", 0x20000),
            ("__GFP_THISNODE", 0x40000),
            ("__GFP_ATOMIC", 0x80000),
            ("__GFP_ACCOUNT", 0x100000),
        ]);
        if v < (4, 15) {
            range = "4.10-4.14";
            singles.extend([
                ("__GFP_COLD", 0x100),
                ("__GFP_NOTRACK", 0x200000),
                ("__GFP_DIRECT_RECLAIM", 0x400000),
                ("__GFP_WRITE", 0x800000),
                ("__GFP_KSWAPD_RECLAIM", 0x1000000),
            ]);
        } else if v < (4, 18) {
            range = "4.15-4.17";
            singles.extend([
                ("__GFP_DIRECT_RECLAIM", 0x400000),
                ("__GFP_WRITE", 0x800000),
                ("__GFP_KSWAPD_RECLAIM", 0x1000000),
            ]);
        } else {
            range = "4.18-5.0";
            singles.extend([
                ("__GFP_WRITE", 0x100),
                ("__GFP_DIRECT_RECLAIM", 0x200000),
                ("__GFP_KSWAPD_RECLAIM", 0x400000),
            ]);
        }
    } else {
        singles.extend([
            ("__GFP_ZERO", 0x100),
            ("__GFP_DIRECT_RECLAIM", 0x400),
            ("__GFP_KSWAPD_RECLAIM", 0x800),
            ("__GFP_WRITE", 0x1000),
            ("__GFP_NOWARN", 0x2000),
            ("__GFP_RETRY_MAYFAIL", 0x4000),
            ("__GFP_NOFAIL", 0x8000),
            ("__GFP_NORETRY", 0x10000),
            ("__GFP_MEMALLOC", 0x20000),
            ("__GFP_COMP", 0x40000),
            ("__GFP_NOMEMALLOC", 0x80000),
            ("__GFP_HARDWALL", 0x100000),
            ("__GFP_THISNODE", 0x200000),
            ("__GFP_ACCOUNT", 0x400000),
        ]);
        if v < (6, 3) {
            range = "5.1-6.2";
            singles.push(("__GFP_ATOMIC", 0x200));
        } else {
            range = "6.3+";
        }
    }
    let bit = |name: &str| {
        singles
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, b)| *b)
    };
    let reclaim = bit("__GFP_DIRECT_RECLAIM") | bit("__GFP_KSWAPD_RECLAIM");
    let kernel = reclaim | bit("__GFP_IO") | bit("__GFP_FS");
    let user = kernel | bit("__GFP_HARDWALL");
    let highuser_movable = user | GFP_HIGHMEM | bit("__GFP_MOVABLE");
    let transhuge_light =
        (highuser_movable | bit("__GFP_COMP") | bit("__GFP_NOMEMALLOC") | bit("__GFP_NOWARN"))
            & !reclaim;
    let mut entries: Vec<(u64, &str)> = vec![
        (
            transhuge_light | bit("__GFP_DIRECT_RECLAIM"),
            "GFP_TRANSHUGE",
        ),
        (transhuge_light, "GFP_TRANSHUGE_LIGHT"),
        (highuser_movable, "GFP_HIGHUSER_MOVABLE"),
        (user | GFP_HIGHMEM, "GFP_HIGHUSER"),
        (user, "GFP_USER"),
    ];
    if v < (4, 14) {
        entries.push((kernel | bit("__GFP_RECLAIMABLE"), "GFP_TEMPORARY"));
    }
    entries.extend([
        (kernel | bit("__GFP_ACCOUNT"), "GFP_KERNEL_ACCOUNT"),
        (kernel, "GFP_KERNEL"),
        (reclaim | bit("__GFP_IO"), "GFP_NOFS"),
        (
            bit("__GFP_HIGH") | bit("__GFP_ATOMIC") | bit("__GFP_KSWAPD_RECLAIM"),
            "GFP_ATOMIC",
        ),
        (reclaim, "GFP_NOIO"),
        (bit("__GFP_KSWAPD_RECLAIM"), "GFP_NOWAIT"),
        (GFP_DMA, "GFP_DMA"),
        (GFP_HIGHMEM, "__GFP_HIGHMEM"),
        (GFP_DMA32, "GFP_DMA32"),
    ]);
    // The single flags in mmflags.h's order.
    const ORDER: [&str; 22] = [
        "__GFP_HIGH",
        "__GFP_ATOMIC",
        "__GFP_IO",
        "__GFP_FS",
        "__GFP_COLD",
        "__GFP_NOWARN",
        "__GFP_REPEAT",
        "__GFP_RETRY_MAYFAIL",
        "__GFP_NOFAIL",
        "__GFP_NORETRY",
        "__GFP_COMP",
        "__GFP_ZERO",
        "__GFP_NOMEMALLOC",
        "__GFP_MEMALLOC",
        "__GFP_HARDWALL",
        "__GFP_THISNODE",
        "__GFP_RECLAIMABLE",
        "__GFP_MOVABLE",
        "__GFP_ACCOUNT",
        "__GFP_NOTRACK",
        "__GFP_WRITE",
        "__GFP_DIRECT_RECLAIM",
    ];
    for name in ORDER {
        if let Some((n, b)) = singles.iter().find(|(n, _)| *n == name) {
            if *n == "__GFP_DIRECT_RECLAIM" {
                entries.push((reclaim, "__GFP_RECLAIM"));
            }
            entries.push((*b, n));
        }
    }
    entries.push((bit("__GFP_KSWAPD_RECLAIM"), "__GFP_KSWAPD_RECLAIM"));
    let stable = singles.iter().fold(0, |acc, (_, b)| acc | b);
    (
        Modern {
            table: table(&entries),
            stable,
        },
        range,
    )
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
            Some("GFP_KERNEL|GFP_COMP|GFP_ZERO|bit20")
        );
        // On 5.4 the same bits are other flags.
        assert_eq!(
            decode(0x10c0d0, Some((5, 4))).flags.as_deref(),
            Some(
                "__GFP_IO|__GFP_FS|__GFP_RETRY_MAYFAIL|__GFP_NOFAIL|__GFP_HARDWALL|__GFP_RECLAIMABLE"
            )
        );
    }

    /// Masks with the names 4.10+ kernels printed themselves, in published logs.
    #[test]
    fn modern_layouts_match_printed_names() {
        for (version, mask, printed) in [
            ((4, 12), 0x14201ca, "GFP_HIGHUSER_MOVABLE|__GFP_COLD"),
            (
                (4, 13),
                0x14310ca,
                "GFP_HIGHUSER_MOVABLE|__GFP_NORETRY|__GFP_NOMEMALLOC",
            ),
            ((4, 14), 0x140c0c0, "GFP_KERNEL|__GFP_COMP|__GFP_ZERO"),
            ((4, 19), 0x6000c0, "GFP_KERNEL"),
            ((5, 0), 0x7080c0, "GFP_KERNEL_ACCOUNT|__GFP_ZERO"),
            ((4, 19), 0x6200ca, "GFP_HIGHUSER_MOVABLE"),
            ((5, 4), 0x40dc0, "GFP_KERNEL|__GFP_COMP|__GFP_ZERO"),
            ((5, 2), 0x40800, "GFP_NOWAIT|__GFP_COMP"),
            ((5, 10), 0xa20, "GFP_ATOMIC"),
            ((6, 8), 0x820, "GFP_ATOMIC"),
            ((6, 8), 0x40c00, "GFP_NOIO|__GFP_COMP"),
            ((5, 13), 0xcc1, "GFP_KERNEL|GFP_DMA"),
            ((6, 11), 0xcc4, "GFP_KERNEL|GFP_DMA32"),
        ] {
            let d = decode(mask, Some(version));
            assert_eq!(
                d.flags.as_deref(),
                Some(printed),
                "{mask:#x} on {version:?}"
            );
            assert!(!d.layout.starts_with("unknown"));
        }
        // 0x200 was __GFP_ATOMIC until 6.2; config-dependent high bits stay numbered.
        assert_eq!(
            decode(0x1000a20, Some((6, 8))).flags.as_deref(),
            Some("GFP_ATOMIC|bit9|bit24")
        );
        assert_eq!(decode(0xcc0, Some((6, 18))).layout, "6.3+");
    }

    /// The 5.1+ single flags equal the 5.10 kernel's own tracefs table.
    #[test]
    fn modern_singles_match_the_5_10_tracefs_table() {
        let t = crate::decode::gfp::GfpTable::from_print_fmt(include_str!(
            "../../tests/fixtures/tracefs/mm_page_alloc-5.10.format"
        ))
        .unwrap();
        let (m, _) = modern((5, 10));
        for name in [
            "__GFP_ZERO",
            "__GFP_ATOMIC",
            "__GFP_NOWARN",
            "__GFP_COMP",
            "__GFP_HARDWALL",
            "__GFP_ACCOUNT",
            "__GFP_WRITE",
            "__GFP_THISNODE",
        ] {
            let bit = t.bit(name).unwrap();
            assert_eq!(m.decode(bit), name);
        }
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
