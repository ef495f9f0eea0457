//! The user's event filters (--min-order, --pid, --comm).
use crate::cli::FilterArgs;

#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Filter {
    pub min_order: Option<u32>,
    pub pid: Option<u32>,
    pub comm: Option<String>,
}

impl Filter {
    pub fn from_args(args: &FilterArgs) -> Self {
        Self {
            min_order: args.min_order,
            pid: args.pid,
            comm: args.comm.clone(),
        }
    }

    /// Whether an event of this task (and order, when it has one) is shown.
    pub fn matches(&self, pid: u32, comm: &str, order: Option<u32>) -> bool {
        self.pid.is_none_or(|p| pid == p)
            && self.comm.as_deref().is_none_or(|c| comm.contains(c))
            && match (self.min_order, order) {
                (Some(min), Some(order)) => order >= min,
                _ => true,
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_conditions_must_hold() {
        let f = Filter {
            min_order: Some(3),
            pid: Some(10),
            comm: Some("runc".into()),
        };
        assert!(f.matches(10, "runc:[1:CHILD]", Some(6)));
        assert!(f.matches(10, "runc", None));
        assert!(!f.matches(10, "runc", Some(2)));
        assert!(!f.matches(11, "runc", Some(6)));
        assert!(!f.matches(10, "dockerd", Some(6)));
        assert!(Filter::default().matches(1, "x", Some(0)));
    }
}
