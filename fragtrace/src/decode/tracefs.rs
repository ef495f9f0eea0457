//! tracefs: where it is (mounting it when needed) and what an event's `format` file says.
use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use crate::error::{ExitStatus, fatal};

const CANDIDATES: &[&str] = &["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Finds a mounted tracefs, or mounts one at /sys/kernel/tracing.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        if dir.join("events").is_dir() {
            return Ok(dir.to_path_buf());
        }
        return Err(fatal(
            ExitStatus::Unsupported,
            format!("{} is not a tracefs (no events/ in it)", dir.display()),
        ));
    }
    if let Some(dir) = CANDIDATES
        .iter()
        .map(Path::new)
        .find(|d| d.join("events").is_dir())
    {
        return Ok(dir.to_path_buf());
    }
    let target = Path::new(CANDIDATES[0]);
    mount_tracefs(target).map_err(|e| {
        fatal(
            ExitStatus::Unsupported,
            format!(
                "tracefs is not mounted and mounting it at {} failed ({e}): run \
                 `mount -t tracefs nodev {}` as root, or check CONFIG_TRACING",
                target.display(),
                target.display()
            ),
        )
    })?;
    Ok(target.to_path_buf())
}

fn mount_tracefs(target: &Path) -> std::io::Result<()> {
    let src = CString::new("nodev").expect("no NUL");
    let fstype = CString::new("tracefs").expect("no NUL");
    let dst = CString::new(target.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One `field:TYPE NAME; offset:N; size:N; signed:N;` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u32,
    pub size: u32,
}

/// A parsed tracefs event `format` file.
#[derive(Debug, Clone)]
pub struct EventFormat {
    pub fields: Vec<Field>,
    pub print_fmt: String,
}

impl EventFormat {
    pub fn read(tracefs: &Path, category: &str, event: &str) -> Result<Self> {
        let path = tracefs
            .join("events")
            .join(category)
            .join(event)
            .join("format");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("unexpected format in {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let mut fields = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("field:") else {
                continue;
            };
            let mut decl = None;
            let mut offset = None;
            let mut size = None;
            for part in rest.split(';') {
                let part = part.trim();
                if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.parse().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.parse().ok();
                } else if decl.is_none() && !part.is_empty() {
                    decl = Some(part);
                }
            }
            let decl = decl.context("field without a declaration")?;
            // The name is the last word, minus any array suffix: `char comm[16]` -> comm.
            let name = decl
                .rsplit([' ', '*'])
                .next()
                .unwrap_or(decl)
                .split('[')
                .next()
                .unwrap_or(decl);
            fields.push(Field {
                name: name.to_string(),
                offset: offset.context("field without offset")?,
                size: size.context("field without size")?,
            });
        }
        let print_fmt = text
            .lines()
            .find_map(|l| l.strip_prefix("print fmt:"))
            .context("no print fmt line")?
            .trim()
            .to_string();
        Ok(Self { fields, print_fmt })
    }

    pub fn field(&self, name: &str) -> Result<&Field> {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .with_context(|| format!("no field {name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mm_page_alloc_6_18() {
        let f = EventFormat::parse(include_str!(
            "../../tests/fixtures/tracefs/mm_page_alloc-6.18.format"
        ))
        .unwrap();
        assert_eq!(f.field("pfn").unwrap().offset, 8);
        assert_eq!(f.field("order").unwrap().offset, 16);
        let gfp = f.field("gfp_flags").unwrap();
        assert_eq!((gfp.offset, gfp.size), (24, 8));
        assert_eq!(f.field("migratetype").unwrap().offset, 32);
        assert_eq!(f.field("common_pid").unwrap().size, 4);
        assert!(f.print_fmt.contains("__print_flags"));
    }

    /// A future kernel that adds a field (here `node`, before `migratetype`): the fields are
    /// found by name wherever they moved, and the new one is simply there.
    #[test]
    fn a_new_field_moves_the_others_and_is_found_by_name() {
        let text = include_str!("../../tests/fixtures/tracefs/mm_page_alloc-6.18.format")
            .replace(
                "\tfield:int migratetype;\toffset:32;\tsize:4;\tsigned:1;",
                "\tfield:int node;\toffset:32;\tsize:4;\tsigned:1;\n\tfield:int migratetype;\toffset:36;\tsize:4;\tsigned:1;",
            );
        let f = EventFormat::parse(&text).unwrap();
        assert_eq!(f.field("node").unwrap().offset, 32);
        assert_eq!(f.field("migratetype").unwrap().offset, 36);
        assert_eq!(f.field("order").unwrap().offset, 16);
    }

    #[test]
    fn older_kernels_put_a_4_byte_gfp_t_elsewhere() {
        let f = EventFormat::parse(include_str!(
            "../../tests/fixtures/tracefs/mm_page_alloc-5.10.format"
        ))
        .unwrap();
        let gfp = f.field("gfp_flags").unwrap();
        assert_eq!((gfp.offset, gfp.size), (20, 4));
        assert_eq!(f.field("migratetype").unwrap().offset, 24);
    }
}
