//! Ties the evidence around each report to it: another report's Mem-Info for a report that printed
//! none (interleaved CPUs), a /proc dump pasted nearby, and the container-runtime errors that
//! followed. Reports wait a bounded window for evidence that comes after them, so memory stays
//! bounded however long the log.
use std::{collections::VecDeque, time::Instant};

use super::{
    dumps::Dump,
    lines::Stamp,
    logparse::{Borrowed, DumpUse, Event, Incident, RuntimeLink, Trigger},
    runtime::RuntimeHit,
};

/// How far (raw lines, or seconds when timestamps share a clock) a report waits for evidence.
const WINDOW_LINES: usize = 300;
const WINDOW_SECONDS: f64 = 120.0;
/// Another report's Mem-Info describes this one's moment only when printed this close to it.
const BORROW_SECONDS: f64 = 2.0;
const BORROW_LINES: usize = 300;
/// Runtime errors kept until a report near them is handed out.
const RUNTIME_KEPT: usize = 256;

struct Pending {
    inc: Incident,
    since: Instant,
}

#[derive(Default)]
pub struct Analyzer {
    pending: VecDeque<Pending>,
    /// The latest report with Mem-Info of its own.
    lender: Option<Borrowed>,
    last_dump: Option<Dump>,
    runtime: VecDeque<RuntimeHit>,
}

/// Distance between two log positions: by time when both stamps share a clock, else by lines.
#[derive(Clone, Copy, PartialEq, PartialOrd)]
enum Distance {
    Seconds(f64),
    Lines(usize),
}

fn distance(a_line: usize, a: &Stamp, b_line: usize, b: &Stamp) -> Distance {
    match a.seconds_until(b) {
        Some(s) => Distance::Seconds(s.abs()),
        None => Distance::Lines(a_line.abs_diff(b_line)),
    }
}

fn within(d: Distance, seconds: f64, lines: usize) -> bool {
    match d {
        Distance::Seconds(s) => s <= seconds,
        Distance::Lines(n) => n <= lines,
    }
}

fn lender_of(inc: &Incident) -> Borrowed {
    Borrowed {
        line: inc.line,
        comm: inc.comm.clone(),
        trigger: inc.trigger,
        zones: inc.zones.clone(),
        stamp: inc.stamp,
        seconds: None,
    }
}

impl Analyzer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one parser event; reports whose window has passed go to `out`.
    pub fn event(&mut self, ev: Event, out: &mut Vec<Incident>) {
        match ev {
            Event::Incident(inc) => self.incident(*inc),
            Event::Dump(dump) => self.dump(dump),
            Event::Runtime(hit) => self.runtime(hit),
        }
        let _ = out;
    }

    fn incident(&mut self, mut inc: Incident) {
        if !inc.has_mem_info() {
            if !inc.oom_zones.is_empty() {
                // The OOM report this failure invoked printed the Mem-Info.
                let oom = inc.oom_kill.as_ref();
                inc.evidence.borrowed = Some(Borrowed {
                    line: oom.map_or(inc.line, |o| o.line),
                    comm: oom.map_or_else(String::new, |o| o.invoker.clone()),
                    trigger: Trigger::OomKiller,
                    zones: std::mem::take(&mut inc.oom_zones),
                    stamp: inc.stamp,
                    seconds: None,
                });
            } else if let Some(lender) = &self.lender {
                offer(&mut inc, lender);
            }
            if let Some(dump) = &self.last_dump {
                offer_dump(&mut inc, dump);
            }
        } else {
            let lender = lender_of(&inc);
            for p in self.pending.iter_mut() {
                if !p.inc.has_mem_info() {
                    offer(&mut p.inc, &lender);
                }
            }
            self.lender = Some(lender);
        }
        self.pending.push_back(Pending {
            inc,
            since: Instant::now(),
        });
    }

    fn dump(&mut self, dump: Dump) {
        for p in self.pending.iter_mut() {
            if !p.inc.has_mem_info() && p.inc.evidence.borrowed.is_none() {
                offer_dump(&mut p.inc, &dump);
            }
        }
        self.last_dump = Some(dump);
    }

    fn runtime(&mut self, hit: RuntimeHit) {
        if self.runtime.len() == RUNTIME_KEPT {
            self.runtime.pop_front();
        }
        self.runtime.push_back(hit);
    }

    /// Hands out the oldest report, with the runtime errors that are nearer to it than to any
    /// other report still waiting (the nearest report before an error, else the nearest after).
    fn release_front(&mut self, out: &mut Vec<Incident>) {
        let Some(Pending { mut inc, .. }) = self.pending.pop_front() else {
            return;
        };
        let key = |i: &Incident, hit: &RuntimeHit| {
            let d = distance(i.line, &i.stamp, hit.line, &hit.stamp);
            (i.line > hit.line, d)
        };
        let mut kept = VecDeque::new();
        for hit in self.runtime.drain(..) {
            let mine = key(&inc, &hit);
            let near = within(mine.1, WINDOW_SECONDS, WINDOW_LINES);
            let better_elsewhere = self.pending.iter().any(|p| {
                let other = key(&p.inc, &hit);
                within(other.1, WINDOW_SECONDS, WINDOW_LINES)
                    && other.partial_cmp(&mine) == Some(std::cmp::Ordering::Less)
            });
            if near && !better_elsewhere {
                inc.evidence.runtime.push(RuntimeLink {
                    by: by_of(mine.1),
                    hit,
                });
            } else if hit.line + 4 * WINDOW_LINES > inc.line {
                kept.push_back(hit);
            }
        }
        self.runtime = kept;
        out.push(inc);
    }

    /// The log has reached raw line `line`: reports whose window has passed are done.
    pub fn advance(&mut self, line: usize, out: &mut Vec<Incident>) {
        while let Some(front) = self.pending.front() {
            // By lines only: exports put kernel and runtime logs in sections of their own, so
            // a runtime error near in time can come after later kernel lines.
            let done = line > front.inc.last_line + WINDOW_LINES;
            if !done {
                break;
            }
            self.release_front(out);
        }
    }

    /// Hands out the reports that have waited at least `hold` (following a live log).
    pub fn release_held(&mut self, hold: std::time::Duration, out: &mut Vec<Incident>) {
        while self
            .pending
            .front()
            .is_some_and(|p| p.since.elapsed() >= hold)
        {
            self.release_front(out);
        }
    }

    /// End of input: everything still waiting.
    pub fn finish(&mut self, out: &mut Vec<Incident>) {
        while !self.pending.is_empty() {
            self.release_front(out);
        }
    }

    /// Whether reports are waiting.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

fn by_of(d: Distance) -> &'static str {
    match d {
        Distance::Seconds(_) => "time",
        Distance::Lines(_) => "position",
    }
}

/// Lends `lender`'s Mem-Info to `inc` when it is near and nearer than what `inc` has.
fn offer(inc: &mut Incident, lender: &Borrowed) {
    let d = distance(inc.line, &inc.stamp, lender.line, &lender.stamp);
    if !within(d, BORROW_SECONDS, BORROW_LINES) {
        return;
    }
    if let Some(have) = &inc.evidence.borrowed
        && have.trigger == Trigger::OomKiller
        && inc.oom_kill.as_ref().is_some_and(|o| o.line == have.line)
    {
        return;
    }
    if let Some(have) = &inc.evidence.borrowed
        && distance(inc.line, &inc.stamp, have.line, &have.stamp) <= d
    {
        return;
    }
    let mut b = lender.clone();
    b.seconds = inc.stamp.seconds_until(&lender.stamp);
    inc.evidence.borrowed = Some(b);
    inc.evidence.dump = None;
}

fn offer_dump(inc: &mut Incident, dump: &Dump) {
    if inc.evidence.borrowed.is_some() {
        return;
    }
    let d = distance(inc.line, &inc.stamp, dump.line, &dump.stamp);
    if !within(d, WINDOW_SECONDS, WINDOW_LINES) {
        return;
    }
    if let Some(have) = &inc.evidence.dump
        && distance(inc.line, &inc.stamp, have.dump.line, &have.dump.stamp) <= d
    {
        return;
    }
    inc.evidence.dump = Some(DumpUse {
        seconds: inc.stamp.seconds_until(&dump.stamp),
        dump: dump.clone(),
    });
}

#[cfg(test)]
mod tests {
    use crate::offline::analyze_text;

    /// With timestamps on both sides, a runtime error goes to the failure nearest in time, not
    /// the one nearest in the file.
    #[test]
    fn runtime_errors_link_by_time_when_both_have_timestamps() {
        let text = "Jan 23 14:15:31 n1 kernel: runc:[1:CHILD]: page allocation failure: order:6, mode:0x10c0d0\n\
                    Jan 23 14:15:31 n1 kernel: CPU: 1 PID: 9 Comm: runc:[1:CHILD] Not tainted 3.10.0-514.el7.x86_64 #1\n\
                    Jan 23 14:20:00 n1 kernel: java: page allocation failure: order:3, mode:0x10c0d0\n\
                    Jan 23 14:20:00 n1 kernel: CPU: 2 PID: 7 Comm: java Not tainted 3.10.0-514.el7.x86_64 #1\n\
                    Jan 23 14:15:32 n1 kubelet: E0123 RunPodSandbox from runtime service failed: rpc error: failed to start sandbox container for pod \"web-1\": exit status 6\n";
        let incidents = analyze_text(text);
        let by_comm = |c: &str| incidents.iter().find(|i| i.comm == c).unwrap();
        let runc = &by_comm("runc:[1:CHILD]").evidence.runtime;
        assert_eq!(runc.len(), 1, "{runc:?}");
        assert_eq!(runc[0].by, "time");
        assert_eq!(runc[0].hit.pod.as_deref(), Some("web-1"));
        assert!(by_comm("java").evidence.runtime.is_empty());
    }
}
