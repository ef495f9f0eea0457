//! GFP flag names from the running kernel's own definitions.
//!
//! The `print fmt` of `kmem/mm_page_alloc` carries the kernel's whole gfp flag table as a
//! `__print_flags(REC->gfp_flags, "|", {mask, "NAME"}, ...)` call whose masks are C constant
//! expressions. [`GfpTable::from_print_fmt`] evaluates them; [`GfpTable::decode`] applies the
//! kernel's own `trace_print_flags_seq` rules, so the names are exactly what ftrace would print.
use anyhow::{Context, Result, bail};

use super::cexpr;

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
        let start = format
            .find("__print_flags(")
            .context("no __print_flags() in the event's print fmt")?;
        let body = &format[start + "__print_flags(".len()..];
        let mut flags = Vec::new();
        let mut rest = body;
        // Entries are brace groups at the call's top level: `{ expr, "NAME" }`.
        while let Some(open) = rest.find('{') {
            // Stop at the call's closing parenthesis.
            if let Some(close_paren) = top_level_close_paren(rest)
                && close_paren < open
            {
                break;
            }
            let close = matching_brace(&rest[open..])
                .map(|i| open + i)
                .context("unbalanced braces in __print_flags")?;
            let entry = &rest[open + 1..close];
            rest = &rest[close + 1..];
            let Some((expr, name)) = split_entry(entry) else {
                continue; // the `{ 0, NULL }` terminator or a malformed entry
            };
            let mask = cexpr::eval(expr)
                .with_context(|| format!("cannot evaluate the mask of {name}: {expr}"))?;
            flags.push(GfpFlag {
                mask,
                name: name.to_string(),
            });
        }
        if flags.is_empty() {
            bail!("the __print_flags() table is empty");
        }
        Ok(Self { flags })
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

/// Index of the `)` that closes the enclosing call, ignoring nested parentheses and strings.
fn top_level_close_paren(s: &str) -> Option<usize> {
    let mut depth = 0i32;
    let mut in_str = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => in_str = !in_str,
            _ if in_str => {}
            '(' | '{' => depth += 1,
            '}' => depth -= 1,
            ')' if depth == 0 => return Some(i),
            ')' => depth -= 1,
            _ => {}
        }
    }
    None
}

fn matching_brace(s: &str) -> Option<usize> {
    let mut depth = 0i32;
    let mut in_str = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => in_str = !in_str,
            _ if in_str => {}
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// `expr, "NAME"` -> (expr, NAME). None for the terminator (no string literal).
fn split_entry(entry: &str) -> Option<(&str, &str)> {
    let name_end = entry.rfind('"')?;
    let name_start = entry[..name_end].rfind('"')?;
    let name = &entry[name_start + 1..name_end];
    let expr = entry[..name_start].trim_end().strip_suffix(',')?.trim();
    Some((expr, name))
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
}
