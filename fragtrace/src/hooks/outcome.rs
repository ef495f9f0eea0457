//! What became of each hook: the method attached or why none did. Shown by `probes` and the
//! summary, served as metrics, and kept in recordings.
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct HookJson {
    pub hook: String,
    /// The attach method in use, or null when the hook is unavailable.
    pub method: Option<String>,
    /// The kernel function, for kprobe/fexit methods.
    pub function: Option<String>,
    pub attached: bool,
    /// Every method that attached (`probes` tries them all; tracing stops at the first).
    pub available: Vec<String>,
    /// Methods tried that did not attach, with the kernel's reason.
    pub unavailable: Vec<MethodError>,
    pub purpose: String,
    /// The option that attaches this hook when tracing, for hooks left out by default.
    pub opt_in: Option<String>,
    /// What an opt-in hook costs the node.
    pub cost: Option<String>,
    /// False when an opt-in hook was left out (its option not given): nothing was tried.
    pub requested: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct MethodError {
    pub method: String,
    pub error: String,
}

impl HookJson {
    pub fn from_status(status: &super::loader::HookStatus) -> Self {
        Self {
            hook: status.hook.name.into(),
            method: status.attached().map(|m| m.kind().into()),
            function: status.attached().and_then(|m| m.function()).map(Into::into),
            attached: status.attached().is_some(),
            available: status
                .attempts
                .iter()
                .filter(|a| a.error.is_none())
                .map(|a| a.method.label())
                .collect(),
            unavailable: status
                .attempts
                .iter()
                .filter_map(|a| {
                    a.error.as_ref().map(|e| MethodError {
                        method: a.method.label(),
                        error: e.clone(),
                    })
                })
                .collect(),
            purpose: status.hook.purpose.into(),
            opt_in: status.hook.opt_in.map(|o| o.option.into()),
            cost: status.hook.opt_in.map(|o| o.cost.into()),
            requested: status.requested,
        }
    }
}
