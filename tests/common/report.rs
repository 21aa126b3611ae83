//! Reporting a reliability scenario: one `RELIABILITY {json}` line on
//! stdout per scenario, appended to `$KDP_RELIABILITY_RESULTS` when that
//! names a file (`scripts/reliability` builds docs/reliability.md's table
//! from those lines), and the scenario's checks.
//!
//! Every figure in a report is computed from what the scenario measured;
//! the checks are written into the same JSON (`checks`) before the test
//! fails on any of them, so a failed run still reports what it saw and
//! every check that failed, not only the first.

use std::fmt::Debug;
use std::io::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

/// The environment variable that swaps the proxy for the plain TCP
/// forwarder (`examples/tcp_forwarder.rs`) in every scenario:
/// `KDP_RELIABILITY_SABOTAGE=forwarder`. The scenarios that claim
/// deduplication must then fail; see docs/reliability.md.
pub const SABOTAGE_ENV: &str = "KDP_RELIABILITY_SABOTAGE";

/// What `KDP_RELIABILITY_SABOTAGE` asks for ("" when unset).
pub fn sabotage() -> String {
    std::env::var(SABOTAGE_ENV).unwrap_or_default()
}

/// Seconds, to a tenth.
pub fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

/// The checks of one scenario: each named, each recorded whether it
/// passed or not.
#[derive(Debug, Default)]
pub struct Checks {
    passed: Vec<String>,
    failed: Vec<String>,
}

impl Checks {
    pub fn new() -> Checks {
        Checks::default()
    }

    /// Records `what` as passed when `ok`; returns `ok`.
    pub fn check(&mut self, ok: bool, what: impl Into<String>) -> bool {
        let what = what.into();
        if ok {
            self.passed.push(what);
        } else {
            self.failed.push(what);
        }
        ok
    }

    /// Records `what: got == want`.
    pub fn eq<T: PartialEq + Debug>(&mut self, got: T, want: T, what: &str) -> bool {
        let ok = got == want;
        self.check(ok, format!("{what} (got {got:?}, want {want:?})"))
    }

    /// Records `what: got > 0`.
    pub fn positive<T: PartialOrd + Default + Debug>(&mut self, got: T, what: &str) -> bool {
        let ok = got > T::default();
        self.check(ok, format!("{what} > 0 (got {got:?})"))
    }

    pub fn failed(&self) -> &[String] {
        &self.failed
    }

    fn json(&self) -> Value {
        json!({"passed": self.passed.len(), "failed": self.failed})
    }
}

/// Prints one scenario's result with its checks, appends it to
/// `$KDP_RELIABILITY_RESULTS`, then fails the test if any check failed.
pub fn report(scenario: &str, mut fields: Value, checks: Checks) {
    fields["scenario"] = json!(scenario);
    fields["checks"] = checks.json();
    let sabotage = sabotage();
    if !sabotage.is_empty() {
        fields["sabotage"] = json!(sabotage);
    }
    let line = fields.to_string();
    println!("RELIABILITY {line}");
    if let Ok(path) = std::env::var("KDP_RELIABILITY_RESULTS")
        && !path.is_empty()
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
    assert!(
        checks.failed.is_empty(),
        "{scenario}: {} check(s) failed:\n  {}",
        checks.failed.len(),
        checks.failed.join("\n  ")
    );
}
