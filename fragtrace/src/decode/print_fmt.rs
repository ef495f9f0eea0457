//! Value tables in tracefs `print fmt` strings: `__print_flags(x, "|", {mask, "NAME"}, ...)` and
//! `__print_symbolic(x, {value, "name"}, ...)`. The kernel prints its own names through them, so
//! reading them keeps fragtrace's names right on every kernel version.
use anyhow::{Context, Result, bail};

use super::cexpr;

/// The `{value, "name"}` entries of the call that starts at `marker` (e.g. `"__print_flags("`
/// or `"__print_symbolic(REC->status"`), in table order.
pub fn table(format: &str, marker: &str) -> Result<Vec<(u64, String)>> {
    let start = format
        .find(marker)
        .with_context(|| format!("no {marker} in the event's print fmt"))?;
    let mut rest = &format[start + marker.len()..];
    let mut entries = Vec::new();
    while let Some(open) = rest.find('{') {
        // Stop at the call's closing parenthesis.
        if let Some(close_paren) = closing(rest, ')')
            && close_paren < open
        {
            break;
        }
        let close = closing(&rest[open + 1..], '}')
            .map(|i| open + 1 + i)
            .context("unbalanced braces in the print fmt table")?;
        let entry = &rest[open + 1..close];
        rest = &rest[close + 1..];
        let Some((expr, name)) = split_entry(entry) else {
            continue; // the `{ 0, NULL }` terminator
        };
        let value = cexpr::eval(expr)
            .with_context(|| format!("cannot evaluate the value of {name}: {expr}"))?;
        entries.push((value, name.to_string()));
    }
    if entries.is_empty() {
        bail!("the {marker} table is empty");
    }
    Ok(entries)
}

/// A `__print_symbolic` table: value to name.
#[derive(Clone, Debug, Default)]
pub struct Symbols {
    entries: Vec<(u64, String)>,
}

impl Symbols {
    /// The table for `field` (`__print_symbolic(REC->field, ...)`); empty when absent.
    pub fn from_print_fmt(format: &str, field: &str) -> Self {
        let marker = format!("__print_symbolic(REC->{field},");
        Self {
            entries: table(format, &marker).unwrap_or_default(),
        }
    }

    /// The kernel's name for `value`, or the number.
    pub fn name(&self, value: u64) -> String {
        self.entries
            .iter()
            .find(|(v, _)| *v == value)
            .map(|(_, n)| n.clone())
            .unwrap_or_else(|| (value as i64).to_string())
    }
}

/// Index of the `close` that ends the enclosing group: scanning from the start, nested `()`
/// and `{}` pairs and string literals are skipped. None when another closer comes first.
fn closing(s: &str, close: char) -> Option<usize> {
    let mut depth = 0u32;
    let mut in_str = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => in_str = !in_str,
            _ if in_str => {}
            '(' | '{' => depth += 1,
            ')' | '}' if depth == 0 => return (c == close).then_some(i),
            ')' | '}' => depth -= 1,
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

    const COMPACTION_END_6_18: &str =
        include_str!("../../tests/fixtures/tracefs/mm_compaction_end-6.18.format");
    const COMPACT_RETRY_6_18: &str =
        include_str!("../../tests/fixtures/tracefs/compact_retry-6.18.format");

    #[test]
    fn symbolic_tables_of_this_kernel() {
        let status = Symbols::from_print_fmt(COMPACTION_END_6_18, "status");
        assert_eq!(status.name(8), "success");
        assert_eq!(status.name(2), "deferred");
        assert_eq!(status.name(0), "not_suitable_zone");
        assert_eq!(status.name(99), "99");
        let prio = Symbols::from_print_fmt(COMPACT_RETRY_6_18, "priority");
        assert_eq!(prio.name(2), "COMPACT_PRIO_ASYNC");
        let result = Symbols::from_print_fmt(COMPACT_RETRY_6_18, "result");
        assert_eq!(result.name(3), "progress");
    }

    #[test]
    fn missing_table_is_empty_not_an_error() {
        let s = Symbols::from_print_fmt("print fmt: \"x=%d\", REC->x", "status");
        assert_eq!(s.name(1), "1");
        assert!(table("no table here", "__print_flags(").is_err());
    }
}
