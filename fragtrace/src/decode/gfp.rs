//! GFP flag names from the running kernel's own definitions.
//!
//! The `print fmt` of `kmem/mm_page_alloc` carries the kernel's whole gfp flag table as a
//! `__print_flags(REC->gfp_flags, "|", {mask, "NAME"}, ...)` call whose masks are C constant
//! expressions. [`GfpTable::from_print_fmt`] evaluates them; [`GfpTable::decode`] applies the
//! kernel's own `trace_print_flags_seq` rules, so the names are exactly what ftrace would print.
use anyhow::Result;

use super::print_fmt;

/// One `{mask, "NAME"}` entry, in table order (composite names first, as the kernel lists them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GfpFlag {
    pub mask: u64,
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GfpTable {
    pub flags: Vec<GfpFlag>,
}

impl GfpTable {
    pub fn new(flags: Vec<GfpFlag>) -> Self {
        Self { flags }
    }

    /// Parses the flag table out of a tracefs event `format` file (or just its `print fmt`).
    pub fn from_print_fmt(format: &str) -> Result<Self> {
        let flags = print_fmt::table(format, "__print_flags(")?
            .into_iter()
            .map(|(mask, name)| GfpFlag { mask, name })
            .collect();
        Ok(Self { flags })
    }

    /// The mask of one named flag (e.g. `__GFP_HIGH`), if this kernel has it.
    pub fn bit(&self, name: &str) -> Option<u64> {
        self.flags.iter().find(|f| f.name == name).map(|f| f.mask)
    }

    /// Names for `gfp`, exactly as the kernel's `__print_flags` prints them.
    pub fn decode(&self, gfp: u64) -> String {
        if gfp == 0 {
            return "none".to_string();
        }
        let mut left = gfp;
        let mut parts: Vec<String> = Vec::new();
        for flag in &self.flags {
            if left == 0 {
                break;
            }
            if left & flag.mask != flag.mask {
                continue;
            }
            left &= !flag.mask;
            parts.push(flag.name.clone());
        }
        if left != 0 {
            parts.push(format!("{left:#x}"));
        }
        parts.join("|")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT_6_18: &str =
        include_str!("../../tests/fixtures/tracefs/mm_page_alloc-6.18.format");

    #[test]
    fn kernel_6_18_table() {
        let t = GfpTable::from_print_fmt(FORMAT_6_18).unwrap();
        let by_name = |n: &str| t.flags.iter().find(|f| f.name == n).unwrap().mask;
        assert_eq!(by_name("__GFP_COMP"), 1 << 18);
        assert_eq!(by_name("__GFP_ACCOUNT"), 1 << 22);
        assert_eq!(by_name("GFP_KERNEL"), 0xcc0);
        assert_eq!(by_name("GFP_KERNEL_ACCOUNT"), 0x400cc0);
        assert_eq!(by_name("GFP_ATOMIC"), 0x820);
        assert_eq!(by_name("GFP_TRANSHUGE_LIGHT") & (1 << 10), 0);
        assert_eq!(t.flags.first().unwrap().name, "GFP_TRANSHUGE");
        assert_eq!(t.flags.last().unwrap().name, "__GFP_NO_OBJ_EXT");
        // The memcg pipe failure of DESIGN.md: GFP_KERNEL_ACCOUNT|__GFP_ZERO|__GFP_COMP|__GFP_NOWARN.
        let gfp = 0x400cc0 | (1 << 8) | (1 << 18) | (1 << 13);
        assert_eq!(
            t.decode(gfp),
            "GFP_KERNEL_ACCOUNT|__GFP_ZERO|__GFP_NOWARN|__GFP_COMP"
        );
        assert_eq!(t.decode(0), "none");
        assert_eq!(t.decode(1 << 30), "0x40000000");
        assert_eq!(t.decode(0xcc0 | (1 << 30)), "GFP_KERNEL|0x40000000");
    }

    #[test]
    fn kernel_5_10_table_uses_hex_literals() {
        let t = GfpTable::from_print_fmt(include_str!(
            "../../tests/fixtures/tracefs/mm_page_alloc-5.10.format"
        ))
        .unwrap();
        let by_name = |n: &str| t.flags.iter().find(|f| f.name == n).unwrap().mask;
        assert_eq!(by_name("GFP_KERNEL"), 0xcc0);
        assert_eq!(by_name("GFP_KERNEL_ACCOUNT"), 0x400cc0);
        assert_eq!(by_name("__GFP_COMP"), 0x40000);
        assert_eq!(by_name("__GFP_ACCOUNT"), 0x400000);
        // The tables differ between kernels (5.10 has no __GFP_NO_OBJ_EXT), which is why they
        // are read from the running kernel.
        assert!(t.flags.iter().all(|f| f.name != "__GFP_NO_OBJ_EXT"));
        assert_eq!(
            t.decode(0x400cc0 | 0x100 | 0x2000 | 0x40000),
            // 5.10 lists __GFP_ZERO after __GFP_COMP; ftrace on 5.10 prints this order.
            "GFP_KERNEL_ACCOUNT|__GFP_NOWARN|__GFP_COMP|__GFP_ZERO"
        );
    }
}
