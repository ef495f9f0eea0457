//! Kernel struct field offsets read from the running kernel's BTF, for the eBPF code that walks
//! kernel structures by hand (the failing task's memory-cgroup counters, the node's zones).
use btf_rs::{Backend, Btf, Type};

const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// eBPF load-time globals by name.
pub type Globals = Vec<(&'static str, u32)>;

/// This kernel's BTF for the layout lookups below, opened once for both. Mapped, it is read
/// only where the lookups go; parsed whole (btf-rs's cached backend) it took 2 to 4 s of
/// start-up in the VM matrix's guests, on every kernel. /sys/kernel/btf/vmlinux can be mapped
/// only from 6.16; before that, a copy in a memfd is mapped instead (one read of a few MB).
pub fn open_btf() -> Result<Btf, String> {
    Btf::from_file_with_backend(VMLINUX_BTF, Backend::Mmap)
        .or_else(|_| mapped_copy())
        .or_else(|_| Btf::from_file(VMLINUX_BTF))
        .map_err(|e| format!("cannot read {VMLINUX_BTF}: {e}"))
}

/// The BTF copied into a memfd, mapped from there.
fn mapped_copy() -> anyhow::Result<Btf> {
    use std::{io::Write, os::fd::FromRawFd};
    let data = std::fs::read(VMLINUX_BTF)?;
    // SAFETY: a constant C string; the descriptor returned is owned by the File below.
    let fd = unsafe { libc::memfd_create(c"fragtrace-btf".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.write_all(&data)?;
    drop(data);
    // btf-rs opens the path itself; the mapping keeps the memfd alive once `file` is closed.
    Ok(Btf::from_file_with_backend(
        format!("/proc/self/fd/{fd}"),
        Backend::Mmap,
    )?)
}

/// Load-time globals for `fragtrace-ebpf/src/memcg.rs`, or why they are unavailable.
pub fn memcg_globals(btf: &Result<Btf, String>) -> Result<Globals, String> {
    memcg_globals_from(btf.as_ref().map_err(Clone::clone)?)
}

/// Load-time globals for `fragtrace-ebpf/src/zones.rs`, or why they are unavailable. `pgdat` is
/// the node data symbol from kallsyms ([`crate::decode::kallsyms::Kallsyms::pgdat`]).
pub fn zone_globals(
    btf: &Result<Btf, String>,
    pgdat: Option<(u64, bool)>,
) -> Result<Globals, String> {
    let Some((_, is_array)) = pgdat else {
        return Err(
            "/proc/kallsyms lists neither node_data nor contig_page_data (a kernel \
                    without CONFIG_KALLSYMS_ALL, or addresses hidden)"
                .into(),
        );
    };
    let mut globals = zone_globals_from(btf.as_ref().map_err(Clone::clone)?)?;
    globals.push(("PGDAT_IS_ARRAY", is_array as u32));
    Ok(globals)
}

fn zone_globals_from(btf: &Btf) -> Result<Globals, String> {
    let zone = named_struct(btf, "zone")?;
    let (free_area, free_area_member) = member(btf, &zone, "zone", "free_area")?;
    let Type::Array(free_areas) = btf
        .resolve_chained_type(&free_area_member)
        .map_err(|e| e.to_string())?
    else {
        return Err("zone.free_area is not an array in this kernel's BTF".into());
    };
    let free_area_struct = named_struct(btf, "free_area")?;
    let vm_stat = member_offset(btf, "zone", "vm_stat")?;
    let counter = |name: &str| enum_value(btf, "zone_stat_item", name);
    let watermark = member_offset(btf, "zone", "_watermark")
        .or_else(|_| member_offset(btf, "zone", "watermark"))?;
    let highatomic = member_offset(btf, "zone", "nr_free_highatomic")
        .or_else(|_| member_offset(btf, "zone", "nr_reserved_highatomic"))?;
    Ok(vec![
        (
            "PGDAT_NODE_ZONES_OFFSET",
            member_offset(btf, "pglist_data", "node_zones")?,
        ),
        ("ZONE_SIZE", zone.size() as u32),
        (
            "ZONE_MANAGED_OFFSET",
            member_offset(btf, "zone", "managed_pages")?,
        ),
        (
            "ZONE_FREE_PAGES_OFFSET",
            vm_stat + counter("NR_FREE_PAGES")? * 8,
        ),
        (
            "ZONE_FREE_CMA_OFFSET",
            counter("NR_FREE_CMA_PAGES").map_or(0, |i| vm_stat + i * 8),
        ),
        ("ZONE_WMARK_MIN_OFFSET", watermark),
        (
            "ZONE_BOOST_OFFSET",
            member_offset(btf, "zone", "watermark_boost").unwrap_or(0),
        ),
        ("ZONE_HIGHATOMIC_OFFSET", highatomic),
        ("ZONE_FREE_AREA_OFFSET", free_area),
        ("FREE_AREA_SIZE", free_area_struct.size() as u32),
        (
            "FREE_AREA_NR_FREE_OFFSET",
            member_offset(btf, "free_area", "nr_free")?,
        ),
        ("ZONE_ORDERS", free_areas.len() as u32),
        ("ZONE_LAYOUT_KNOWN", 1),
    ])
}

/// The offset and the member itself (for its type), at the top level of `s`.
fn member(
    btf: &Btf,
    s: &btf_rs::Struct,
    name: &str,
    wanted: &str,
) -> Result<(u32, btf_rs::Member), String> {
    s.members
        .iter()
        .find(|m| btf.resolve_name(*m).is_ok_and(|n| n == wanted))
        .map(|m| (m.bit_offset() / 8, m.clone()))
        .ok_or_else(|| format!("struct {name} has no member {wanted} in this kernel's BTF"))
}

fn memcg_globals_from(btf: &Btf) -> Result<Globals, String> {
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

    /// The zone layout resolves on this kernel: free_area has at least MAX_ORDER + 1 orders
    /// and lies inside struct zone.
    #[test]
    fn this_kernel_has_the_zone_layout() {
        let Ok(btf) = Btf::from_file(VMLINUX_BTF) else {
            crate::test_support::skip(
                "this_kernel_has_the_zone_layout",
                &format!("no {VMLINUX_BTF}"),
            );
            return;
        };
        let globals: std::collections::HashMap<_, _> =
            zone_globals_from(&btf).unwrap().into_iter().collect();
        assert!(globals["ZONE_ORDERS"] >= 11, "{globals:?}");
        assert!(globals["ZONE_FREE_AREA_OFFSET"] < globals["ZONE_SIZE"]);
        assert!(globals["FREE_AREA_NR_FREE_OFFSET"] < globals["FREE_AREA_SIZE"]);
        assert!(globals["ZONE_FREE_PAGES_OFFSET"] < globals["ZONE_SIZE"]);
    }

    /// On a kernel with BTF, the offsets resolve and are consistent with each other.
    #[test]
    fn this_kernel_has_the_memcg_layout() {
        let Ok(btf) = Btf::from_file(VMLINUX_BTF) else {
            crate::test_support::skip(
                "this_kernel_has_the_memcg_layout",
                &format!("no {VMLINUX_BTF}"),
            );
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
