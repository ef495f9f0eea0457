//! Kernel struct field offsets read from the running kernel's BTF, for the eBPF code that walks
//! kernel structures by hand (the failing task's memory-cgroup counters).
use btf_rs::{Backend, Btf, Type};

const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Load-time globals for `fragtrace-ebpf/src/memcg.rs`, or why they are unavailable.
pub fn memcg_globals() -> Result<Vec<(&'static str, u32)>, String> {
    // Mmap reads only what the lookups touch (kernels from 6.16 allow it); the cached backend
    // parses the whole file, which costs time and a heap peak at start-up.
    let btf = Btf::from_file_with_backend(VMLINUX_BTF, Backend::Mmap)
        .or_else(|_| Btf::from_file(VMLINUX_BTF))
        .map_err(|e| format!("cannot read {VMLINUX_BTF}: {e}"))?;
    memcg_globals_from(&btf)
}

fn memcg_globals_from(btf: &Btf) -> Result<Vec<(&'static str, u32)>, String> {
    let memory_cgrp_id = enum_value(btf, "cgroup_subsys_id", "memory_cgrp_id")?;
    let subsys = member_offset(btf, "css_set", "subsys")?;
    let css = member_offset(btf, "mem_cgroup", "css")?;
    let memory = member_offset(btf, "mem_cgroup", "memory")?;
    Ok(vec![
        (
            "TASK_CGROUPS_OFFSET",
            member_offset(btf, "task_struct", "cgroups")?,
        ),
        (
            "CSS_SET_MEMORY_SUBSYS_OFFSET",
            subsys + memory_cgrp_id * size_of::<u64>() as u32,
        ),
        (
            "MEMCG_CSS_TO_COUNTER",
            memory
                .checked_sub(css)
                .ok_or("mem_cgroup.memory lies before mem_cgroup.css")?,
        ),
        (
            "COUNTER_USAGE_OFFSET",
            member_offset(btf, "page_counter", "usage")?,
        ),
        (
            "COUNTER_MAX_OFFSET",
            member_offset(btf, "page_counter", "max")?,
        ),
        (
            "COUNTER_PARENT_OFFSET",
            member_offset(btf, "page_counter", "parent")?,
        ),
        (
            "CSS_CGROUP_OFFSET",
            member_offset(btf, "cgroup_subsys_state", "cgroup")?,
        ),
        ("CGROUP_KN_OFFSET", member_offset(btf, "cgroup", "kn")?),
        ("KERNFS_ID_OFFSET", member_offset(btf, "kernfs_node", "id")?),
        ("MEMCG_LAYOUT_KNOWN", 1),
    ])
}

/// The byte offset of `member` in `struct name`, looking inside anonymous structs and unions.
fn member_offset(btf: &Btf, name: &str, member: &str) -> Result<u32, String> {
    let s = named_struct(btf, name)?;
    find_member(btf, &s, member)?
        .ok_or_else(|| format!("struct {name} has no member {member} in this kernel's BTF"))
}

fn named_struct(btf: &Btf, name: &str) -> Result<btf_rs::Struct, String> {
    let types = btf
        .resolve_types_by_name(name)
        .map_err(|_| format!("struct {name} is not in this kernel's BTF"))?;
    types
        .into_iter()
        .find_map(|t| match t {
            Type::Struct(s) if !s.members.is_empty() => Some(s),
            _ => None,
        })
        .ok_or_else(|| format!("struct {name} is not in this kernel's BTF"))
}

fn find_member(btf: &Btf, s: &btf_rs::Struct, member: &str) -> Result<Option<u32>, String> {
    for m in &s.members {
        let name = btf.resolve_name(m).unwrap_or_default();
        let offset = m.bit_offset() / 8;
        if name == member {
            return Ok(Some(offset));
        }
        if name.is_empty() {
            let inner = match btf.resolve_chained_type(m).map_err(|e| e.to_string())? {
                Type::Struct(inner) | Type::Union(inner) => inner,
                _ => continue,
            };
            if let Some(inner_offset) = find_member(btf, &inner, member)? {
                return Ok(Some(offset + inner_offset));
            }
        }
    }
    Ok(None)
}

fn enum_value(btf: &Btf, name: &str, member: &str) -> Result<u32, String> {
    let types = btf
        .resolve_types_by_name(name)
        .map_err(|_| format!("enum {name} is not in this kernel's BTF"))?;
    for t in types {
        if let Type::Enum(e) = t {
            for m in &e.members {
                if btf.resolve_name(m).is_ok_and(|n| n == member) {
                    return Ok(m.val());
                }
            }
        }
    }
    Err(format!("enum {name} has no {member} in this kernel's BTF"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a kernel with BTF, the offsets resolve and are consistent with each other.
    #[test]
    fn this_kernel_has_the_memcg_layout() {
        let Ok(btf) = Btf::from_file(VMLINUX_BTF) else {
            eprintln!("skipped: no {VMLINUX_BTF}");
            return;
        };
        let globals: std::collections::HashMap<_, _> =
            memcg_globals_from(&btf).unwrap().into_iter().collect();
        assert_eq!(
            globals["COUNTER_USAGE_OFFSET"], 0,
            "usage leads page_counter"
        );
        assert!(globals["COUNTER_MAX_OFFSET"] > 0);
        assert!(globals["COUNTER_PARENT_OFFSET"] > globals["COUNTER_MAX_OFFSET"]);
        assert!(globals["TASK_CGROUPS_OFFSET"] > 0);
        assert!(
            find_member(
                &btf,
                &named_struct(&btf, "page_counter").unwrap(),
                "nonexistent"
            )
            .unwrap()
            .is_none()
        );
    }
}
