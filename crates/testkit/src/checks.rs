//! The outcome of a test script (node, a browser driver) that prints one
//! `ok <check>` line per check and closes with `<n> passed, <m> failed`:
//! nothing failed, and the count it claims is the count of checks it ran, so
//! adding a check never means editing a number in the Rust test.

/// Asserts that `output` closes its checks with `<n> passed, 0 failed`, that
/// `n` is the number of `ok ` lines it printed, and that it ran at least one;
/// returns `n`.
///
/// ```
/// let out = "ok joined\nmeasured 3 ms\nok replied\n2 passed, 0 failed\n";
/// assert_eq!(phx_testkit::assert_all_passed(out), 2);
/// ```
pub fn assert_all_passed(output: &str) -> usize {
    let ran = output.lines().filter(|l| l.starts_with("ok ")).count();
    let (passed, failed) = output
        .lines()
        .rev()
        .find_map(summary)
        .unwrap_or_else(|| panic!("no `<n> passed, <m> failed` line in:\n{output}"));
    assert_eq!(failed, 0, "{failed} checks failed:\n{output}");
    assert!(ran > 0, "the script ran no check:\n{output}");
    assert_eq!(
        passed, ran,
        "the script says {passed} passed but printed {ran} `ok` lines:\n{output}"
    );
    passed
}

/// `(n, m)` from a `<n> passed, <m> failed` line.
fn summary(line: &str) -> Option<(usize, usize)> {
    let (passed, failed) = line.trim().split_once(" passed, ")?;
    let failed = failed.strip_suffix(" failed")?;
    Some((passed.parse().ok()?, failed.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "says 3 passed but printed 2")]
    fn a_claim_larger_than_the_checks_run_fails() {
        assert_all_passed("ok a\nok b\n3 passed, 0 failed");
    }

    #[test]
    #[should_panic(expected = "1 checks failed")]
    fn a_failure_fails() {
        assert_all_passed("ok a\n1 passed, 1 failed");
    }

    #[test]
    #[should_panic(expected = "no `<n> passed")]
    fn a_missing_summary_fails() {
        assert_all_passed("ok a\n");
    }
}
