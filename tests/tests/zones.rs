//! Root integration test: the fragmentation indices fragtrace computes from /proc/buddyinfo equal
//! the kernel's own in /sys/kernel/debug/extfrag (mounted for the test if it is not).
use fragtrace::zones::{index, procfs::parse_buddyinfo};
use fragtrace_tests::{Debugfs, is_root_or_skip, skip};

/// `Node 0, zone   Normal -1.000  0.978 ...` lines: (node, zone, indices in thousandths).
fn parse_debugfs(text: &str) -> Vec<(u32, String, Vec<i64>)> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (node, rest) = line
                .strip_prefix("Node ")
                .and_then(|r| r.split_once(", zone"))
                .unwrap_or_else(|| panic!("unexpected debugfs line: {line}"));
            let mut fields = rest.split_whitespace();
            let zone = fields.next().unwrap().to_string();
            let values = fields
                .map(|v| {
                    let (int, frac) = v.split_once('.').unwrap();
                    let (int, frac): (i64, i64) = (int.parse().unwrap(), frac.parse().unwrap());
                    int * 1000 + if v.starts_with('-') { -frac } else { frac }
                })
                .collect();
            (node.parse().unwrap(), zone, values)
        })
        .collect()
}

#[test]
fn indices_equal_the_kernels_debugfs() {
    const TEST: &str = "indices_equal_the_kernels_debugfs";
    if !is_root_or_skip(TEST) {
        return;
    }
    let Some(_debugfs) = Debugfs::ensure() else {
        return;
    };
    let dir = std::path::Path::new(Debugfs::DIR).join("extfrag");
    if !dir.is_dir() {
        skip(
            TEST,
            &format!("no {} (needs CONFIG_COMPACTION)", dir.display()),
        );
        return;
    }
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    // The kernel computes its indices when the file is read: compare only when buddyinfo held
    // still around both reads.
    for _ in 0..500 {
        let before = read("/proc/buddyinfo".as_ref());
        let unusable = read(&dir.join("unusable_index"));
        let extfrag = read(&dir.join("extfrag_index"));
        if read("/proc/buddyinfo".as_ref()) != before {
            continue;
        }
        let zones = parse_buddyinfo(&before).unwrap();
        let (unusable, extfrag) = (parse_debugfs(&unusable), parse_debugfs(&extfrag));
        assert_eq!(unusable.len(), zones.len(), "{before}");
        assert_eq!(extfrag.len(), zones.len(), "{before}");
        for ((z, u), e) in zones.iter().zip(&unusable).zip(&extfrag) {
            let (mine_u, mine_e) = index::indices(&z.free_blocks);
            assert_eq!(
                (z.node, &z.zone, &mine_u),
                (u.0, &u.1, &u.2),
                "unusable_index"
            );
            assert_eq!(
                (z.node, &z.zone, &mine_e),
                (e.0, &e.1, &e.2),
                "extfrag_index"
            );
        }
        return;
    }
    skip(
        TEST,
        "/proc/buddyinfo changed during each of 500 reads of debugfs",
    );
}
