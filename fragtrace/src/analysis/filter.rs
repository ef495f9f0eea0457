//! The user's event filters (--min-order, --pid, --comm).
use crate::{cli::TraceArgs, decode::event::AllocFail};

#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub min_order: Option<u32>,
    pub pid: Option<u32>,
    pub comm: Option<String>,
}

impl Filter {
    pub fn from_args(args: &TraceArgs) -> Self {
        Self {
            min_order: args.min_order,
            pid: args.pid,
            comm: args.comm.clone(),
        }
    }

    pub fn matches(&self, ev: &AllocFail) -> bool {
        self.min_order.is_none_or(|min| ev.order >= min)
            && self.pid.is_none_or(|pid| ev.pid == pid)
            && self.comm.as_deref().is_none_or(|c| ev.comm.contains(c))
    }
}
