//! Migratetype names in the running kernel's enum order, read from /proc/pagetypeinfo (which
//! prints `migratetype_names[]` in enum order). Without it, types are shown by number.
#[derive(Debug, Clone, Default)]
pub struct MigrateTypes {
    names: Vec<String>,
}

impl MigrateTypes {
    pub fn load() -> Self {
        std::fs::read_to_string("/proc/pagetypeinfo")
            .map(|t| Self::parse(&t))
            .unwrap_or_default()
    }

    /// Names from the `type NAME` column of the first zone listed.
    pub fn parse(pagetypeinfo: &str) -> Self {
        let mut names: Vec<String> = Vec::new();
        let mut first_zone: Option<String> = None;
        for line in pagetypeinfo.lines() {
            let Some((zone_part, rest)) = line.split_once(", type") else {
                continue;
            };
            if first_zone.get_or_insert_with(|| zone_part.to_string()) != zone_part {
                break;
            }
            if let Some(name) = rest.split_whitespace().next() {
                names.push(name.to_string());
            }
        }
        Self { names }
    }

    pub fn from_names(names: Vec<String>) -> Self {
        Self { names }
    }

    /// The names in enum order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn name(&self, migratetype: i32) -> String {
        usize::try_from(migratetype)
            .ok()
            .and_then(|i| self.names.get(i))
            .cloned()
            .unwrap_or_else(|| format!("migratetype{migratetype}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_enum_order() {
        let text = "Page block order: 9\n\
Free pages count per migrate type at order       0      1\n\
Node    0, zone      DMA, type    Unmovable      0      0\n\
Node    0, zone      DMA, type      Movable      0      0\n\
Node    0, zone      DMA, type  Reclaimable      0      0\n\
Node    0, zone      DMA, type   HighAtomic      0      0\n\
Node    0, zone      DMA, type      Isolate      0      0\n\
Node    0, zone    DMA32, type    Unmovable      0      0\n";
        let m = MigrateTypes::parse(text);
        assert_eq!(m.name(0), "Unmovable");
        assert_eq!(m.name(1), "Movable");
        assert_eq!(m.name(4), "Isolate");
        assert_eq!(m.name(5), "migratetype5");
        assert_eq!(m.name(-1), "migratetype-1");
    }
}
