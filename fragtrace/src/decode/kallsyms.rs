//! Kernel symbolization from `/proc/kallsyms`: loaded once, sorted, searched by binary search.
use std::{
    io::{BufRead, BufReader},
    path::Path,
};

use anyhow::{Context, Result};

/// One text symbol: its address and where its name (and module) sit in the arena.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    addr: u64,
    name_start: u32,
    name_len: u16,
    /// Index into `modules`, or `u16::MAX` for the kernel image.
    module: u16,
}

/// ~100k symbols on a typical kernel: names live in one arena (16 bytes per entry plus the
/// name) so the always-on daemon stays small.
#[derive(Debug, Default)]
pub struct Kallsyms {
    syms: Vec<Symbol>,
    names: String,
    modules: Vec<String>,
    /// The node data symbol, for reading zones in the kernel: `node_data` (an array of
    /// `pglist_data *`; true) or `contig_page_data` (the one node; false). Data symbols are
    /// listed only with CONFIG_KALLSYMS_ALL.
    pub pgdat: Option<(u64, bool)>,
    /// Bumped by every symbol added after parsing: what was resolved before may now resolve
    /// differently (caches of resolved stacks compare it).
    generation: u64,
}

impl Kallsyms {
    pub fn load() -> Result<Self> {
        Self::load_from(Path::new("/proc/kallsyms"))
    }

    /// Reads line by line: the file is 5 MB of text on a 6.x kernel, more than the table.
    pub fn load_from(path: &Path) -> Result<Self> {
        let cannot = || format!("cannot read {}", path.display());
        let mut file = BufReader::new(std::fs::File::open(path).with_context(cannot)?);
        let mut table = Self::default();
        let mut line = String::new();
        while file.read_line(&mut line).with_context(cannot)? > 0 {
            table.add_line(&line);
            line.clear();
        }
        table.finish();
        Ok(table)
    }

    /// Parses `ADDR TYPE NAME [MODULE]` lines. Zero addresses (kptr_restrict) are dropped, so
    /// a restricted kallsyms gives an empty table and raw addresses in the output.
    pub fn parse(text: &str) -> Self {
        let mut table = Self::default();
        for line in text.lines() {
            table.add_line(line);
        }
        table.finish();
        table
    }

    fn add_line(&mut self, line: &str) {
        let mut it = line.split_ascii_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
            return;
        };
        let Ok(addr) = u64::from_str_radix(addr, 16) else {
            return;
        };
        if addr != 0 && it.clone().next().is_none() {
            match name {
                "node_data" => self.pgdat = Some((addr, true)),
                "contig_page_data" if self.pgdat.is_none() => self.pgdat = Some((addr, false)),
                _ => {}
            }
        }
        // Text symbols only: stacks hold code addresses. Not the padding before each
        // function (`__pfx_`, 6.2+; `__cfi_`, kCFI), half of all text symbols on 6.2+: no
        // stack points into it, and a noreturn call ending a function leaves a return
        // address at the next padding, which belongs to the caller. (arm64 clang-CFI kernels
        // of 5.13-5.19 had a few real `__cfi_` functions; an allocation stack has none.)
        if addr == 0
            || !matches!(kind, "t" | "T" | "w" | "W")
            || name.len() > u16::MAX as usize
            || name.starts_with("__pfx_")
            || name.starts_with("__cfi_")
        {
            return;
        }
        let module = match it.next() {
            Some(m) => {
                let m = m.trim_start_matches('[').trim_end_matches(']');
                // Modules come in runs: usually the last one.
                match self.modules.iter().rposition(|x| x == m) {
                    Some(i) => i as u16,
                    None => {
                        self.modules.push(m.to_string());
                        (self.modules.len() - 1) as u16
                    }
                }
            }
            None => u16::MAX,
        };
        self.syms.push(Symbol {
            addr,
            name_start: self.names.len() as u32,
            name_len: name.len() as u16,
            module,
        });
        self.names.push_str(name);
    }

    fn finish(&mut self) {
        self.syms.sort_by_key(|s| s.addr);
        self.syms.shrink_to_fit();
        self.names.shrink_to_fit();
    }

    fn name_of(&self, s: &Symbol) -> &str {
        let start = s.name_start as usize;
        &self.names[start..start + s.name_len as usize]
    }

    fn module_of(&self, s: &Symbol) -> Option<&str> {
        self.modules.get(s.module as usize).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }

    /// Changes whenever a symbol is added: lookups made before may no longer hold.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The symbol containing `addr` and the offset into it. kallsyms has no sizes, so an
    /// address far past the nearest symbol (a BPF program or trampoline, which kallsyms lists
    /// only with `net.core.bpf_jit_kallsyms=1`) is unknown rather than misnamed.
    pub fn lookup(&self, addr: u64) -> Option<(&str, u64, Option<&str>)> {
        const MAX_FUNCTION_SIZE: u64 = 1 << 20;
        let idx = self
            .syms
            .partition_point(|s| s.addr <= addr)
            .checked_sub(1)?;
        let s = &self.syms[idx];
        let offset = addr - s.addr;
        (offset < MAX_FUNCTION_SIZE).then(|| (self.name_of(s), offset, self.module_of(s)))
    }

    /// The symbol containing `addr`: its start address, name and module.
    pub fn symbol_at(&self, addr: u64) -> Option<(u64, &str, Option<&str>)> {
        let (name, offset, module) = self.lookup(addr)?;
        Some((addr - offset, name, module))
    }

    /// Adds one symbol (a recording's): the table stays sorted.
    pub fn insert(&mut self, addr: u64, name: &str, module: Option<&str>) {
        if name.len() > u16::MAX as usize || self.syms.iter().any(|s| s.addr == addr) {
            return;
        }
        let module = match module {
            Some(m) => match self.modules.iter().position(|x| x == m) {
                Some(i) => i as u16,
                None => {
                    self.modules.push(m.to_string());
                    (self.modules.len() - 1) as u16
                }
            },
            None => u16::MAX,
        };
        let at = self.syms.partition_point(|s| s.addr < addr);
        self.generation += 1;
        self.syms.insert(
            at,
            Symbol {
                addr,
                name_start: self.names.len() as u32,
                name_len: name.len() as u16,
                module,
            },
        );
        self.names.push_str(name);
    }

    /// `symbol+0xoff`, `symbol+0xoff [module]`, or the raw address.
    pub fn format(&self, addr: u64) -> String {
        match self.lookup(addr) {
            Some((name, off, None)) => format!("{name}+{off:#x}"),
            Some((name, off, Some(module))) => format!("{name}+{off:#x} [{module}]"),
            None => format!("{addr:#x}"),
        }
    }

    /// The address of a text symbol, if the kernel has it.
    pub fn address_of(&self, name: &str) -> Option<u64> {
        self.syms
            .iter()
            .find(|s| self.name_of(s) == name)
            .map(|s| s.addr)
    }

    /// Name only (no offset), for matching.
    pub fn name(&self, addr: u64) -> Option<&str> {
        self.lookup(addr).map(|(n, _, _)| n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ffffffff81000000 T _stext
ffffffff81000000 T startup_64
ffffffff812a0000 T __alloc_pages_noprof
ffffffff812a07f0 t __pfx___alloc_pages_slowpath
ffffffff812a0800 t __alloc_pages_slowpath
ffffffff812a0400 D some_data
ffffffffc0a00ff0 t __cfi_nf_conntrack_init_net\t[nf_conntrack]
ffffffffc0a01000 t nf_conntrack_init_net\t[nf_conntrack]
0000000000000000 A fixed_percpu_data
";

    #[test]
    fn lookup_by_binary_search() {
        let k = Kallsyms::parse(SAMPLE);
        assert_eq!(k.format(0xffffffff812a0010), "__alloc_pages_noprof+0x10");
        // Data symbols are skipped: 0x...0500 still belongs to __alloc_pages_noprof.
        assert_eq!(k.format(0xffffffff812a0500), "__alloc_pages_noprof+0x500");
        assert_eq!(k.format(0xffffffff812a0800), "__alloc_pages_slowpath+0x0");
        // Function padding is not a symbol: a return address after a noreturn call at the
        // end of a function lands there, and belongs to that function.
        assert_eq!(k.format(0xffffffff812a07f0), "__alloc_pages_noprof+0x7f0");
        assert_eq!(k.address_of("__pfx___alloc_pages_slowpath"), None);
        assert_eq!(k.syms.len(), 5);
        assert_eq!(
            k.format(0xffffffffc0a01101),
            "nf_conntrack_init_net+0x101 [nf_conntrack]"
        );
        assert_eq!(k.format(0x1000), "0x1000");
        // Far past the last symbol: a JIT-ed BPF program, not nf_conntrack_init_net.
        assert_eq!(k.format(0xffffffffc1a01000), "0xffffffffc1a01000");
        // Before the first symbol.
        assert_eq!(k.format(0xffffffff80000000), "0xffffffff80000000");
        assert_eq!(k.name(0xffffffff812a0801), Some("__alloc_pages_slowpath"));
    }

    #[test]
    fn restricted_kallsyms_is_empty() {
        let k = Kallsyms::parse("0000000000000000 T _stext\n0000000000000000 T foo\n");
        assert!(k.is_empty());
        assert_eq!(k.format(0xffffffff81000000), "0xffffffff81000000");
    }

    /// The real /proc/kallsyms (readable by everyone): with addresses shown (root, or
    /// kptr_restrict allowing it) the allocator must resolve; with them hidden the table is empty.
    #[test]
    fn this_machine() {
        let k = Kallsyms::load().expect("/proc/kallsyms is readable by everyone");
        let text = std::fs::read_to_string("/proc/kallsyms").unwrap();
        let alloc = text
            .lines()
            .find(|l| l.ends_with(" __alloc_pages_noprof") || l.ends_with(" __alloc_pages"))
            .expect("an __alloc_pages symbol");
        let addr = u64::from_str_radix(alloc.split(' ').next().unwrap(), 16).unwrap();
        if addr == 0 {
            assert!(k.is_empty(), "hidden addresses must give an empty table");
            return;
        }
        assert!(!k.is_empty());
        let name = alloc.rsplit(' ').next().unwrap();
        assert_eq!(k.format(addr + 4), format!("{name}+0x4"));
        assert_eq!(k.address_of(name), Some(addr));
    }

    #[test]
    fn finds_the_node_data_symbol() {
        let numa = Kallsyms::parse("ffffffff82a1c000 T _stext\nffffffff83456780 B node_data\n");
        assert_eq!(numa.pgdat, Some((0xffffffff83456780, true)));
        let flat = Kallsyms::parse("ffffffff83456780 D contig_page_data\n");
        assert_eq!(flat.pgdat, Some((0xffffffff83456780, false)));
        // A module's symbol of the same name, or a hidden address, does not count.
        assert_eq!(
            Kallsyms::parse("ffffffffc0001000 d node_data [foo]\n").pgdat,
            None
        );
        assert_eq!(
            Kallsyms::parse("0000000000000000 B node_data\n").pgdat,
            None
        );
    }
}
