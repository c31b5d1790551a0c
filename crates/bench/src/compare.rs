//! Runs side by side: each scenario's outcome with the server it ran against (ours
//! or the floor), whether the cores were pinned and the machine's load when it
//! began, and the table of ours / floor — server CPU per unit of work (user and
//! kernel apart), latency, memory — that the README carries.

use serde_json::{json, Value};

use crate::report::{group, Machine, Outcome};

/// The machine's load when a run began: the one-minute load average.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    pub load1: f64,
}

impl Load {
    /// Reads `/proc/loadavg`.
    pub fn now() -> Load {
        let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        Load {
            load1: text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0),
        }
    }
}

/// One scenario run against one server.
pub struct Run {
    /// `ours`, `floor` or `phoenix`.
    pub server: &'static str,
    /// Server on one core, generator on the other.
    pub pinned: bool,
    /// The load when it began.
    pub load: Load,
    pub outcome: Outcome,
}

impl Run {
    fn cores(&self) -> &'static str {
        if self.pinned {
            "pinned"
        } else {
            "shared"
        }
    }

    /// The line printed when the run ends.
    pub fn line(&self) -> String {
        format!(
            "[{} {}, load {:.2}] {}",
            self.server,
            self.cores(),
            self.load.load1,
            self.outcome.line()
        )
    }

    /// The outcome's JSON line with the server, the cores and the load.
    pub fn json(&self, date: &str) -> String {
        let mut v: Value = serde_json::from_str(&self.outcome.json(date)).unwrap_or(Value::Null);
        if let Value::Object(obj) = &mut v {
            obj.insert("server".into(), json!(self.server));
            obj.insert("pinned".into(), json!(self.pinned));
            obj.insert("load1".into(), json!(self.load.load1));
            let (unit, units) = work(&self.outcome);
            obj.insert("unit".into(), json!(unit));
            obj.insert("units".into(), json!(units));
        }
        v.to_string()
    }
}

/// The unit of work a scenario is charged per, and how many it did.
fn work(o: &Outcome) -> (&'static str, f64) {
    let f = |key: &str| o.figures.get(key).and_then(Value::as_f64).unwrap_or(0.0);
    match o.scenario {
        "latency" | "fanout" => ("delivery", f("deliveries")),
        "echo" => ("round trip", f("round_trips")),
        "memory" => ("connection", f("joins_answered")),
        "presence" => (
            "leave × remaining member",
            f("left") * f("mirrors_remaining"),
        ),
        "storm" => ("join", f("joins_answered")),
        "churn" => ("cycle", f("cycles")),
        _ => ("run", 1.0),
    }
}

/// Server CPU per unit in microseconds: (user, kernel).
fn per_unit(o: &Outcome) -> (f64, f64) {
    let (_, units) = work(o);
    let units = units.max(1.0);
    let u = &o.usage;
    (
        (u.server_cpu - u.server_system_cpu) * 1e6 / units,
        u.server_system_cpu * 1e6 / units,
    )
}

/// The figure beside CPU that a scenario is judged on, as text, and as a number
/// (lower is better) for the ratio.
fn headline(o: &Outcome) -> (String, Option<f64>) {
    let f = |key: &str| o.figures.get(key).and_then(Value::as_f64);
    match o.scenario {
        "latency" => match (f("p50_ms"), f("p99_ms")) {
            (Some(p50), Some(p99)) => (format!("p50 {p50:.2} / p99 {p99:.2} ms"), Some(p99)),
            _ => ("–".into(), None),
        },
        "storm" => match (f("join_p50_ms"), f("join_p99_ms")) {
            (Some(p50), Some(p99)) => (format!("join p50 {p50:.0} / p99 {p99:.0} ms"), Some(p99)),
            _ => ("–".into(), None),
        },
        "memory" => match f("bytes_per_connection") {
            Some(b) => (format!("{:.1} KiB per connection", b / 1024.0), Some(b)),
            None => ("–".into(), None),
        },
        "presence" => match f("settle_ms") {
            Some(ms) => (format!("settled in {ms:.0} ms"), Some(ms)),
            None => ("–".into(), None),
        },
        "echo" => (
            format!(
                "{} round trips/s",
                group(f("round_trips_per_s").unwrap_or(0.0))
            ),
            None,
        ),
        "fanout" => (
            format!(
                "{} deliveries/s",
                group(f("deliveries_per_s").unwrap_or(0.0))
            ),
            None,
        ),
        _ => ("–".into(), None),
    }
}

/// What the headline ratio is of.
fn headline_name(scenario: &str) -> &'static str {
    match scenario {
        "latency" => "p99",
        "storm" => "join p99",
        "memory" => "RSS",
        "presence" => "settling",
        _ => "",
    }
}

/// Prints, for every scenario run against ours and the `reference` server (`floor`
/// or `phoenix`), one row per core setting: the reference's and our server CPU per
/// unit (user + kernel µs), their ratio, the headline figure of each and its ratio,
/// and the load beside them.
pub fn print_ratios(runs: &[Run], reference: &str) {
    let r = reference;
    println!("\n| scenario | cores | per | {r}: server CPU µs (user + kernel) | ours: server CPU µs (user + kernel) | ours / {r} CPU | {r} | ours | ours / {r} | load (1-min avg; other processes' CPU s, {r} / ours) |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for ours in runs.iter().filter(|r| r.server == "ours") {
        let Some(floor) = runs.iter().find(|r| {
            r.server == reference
                && r.pinned == ours.pinned
                && r.outcome.command == ours.outcome.command
        }) else {
            continue;
        };
        let (o, f) = (&ours.outcome, &floor.outcome);
        let (unit, _) = work(o);
        let (ou, ok) = per_unit(o);
        let (fu, fk) = per_unit(f);
        let cpu_ratio = if fu + fk > 0.0 {
            format!("**{:.2}×**", (ou + ok) / (fu + fk))
        } else {
            "–".into()
        };
        let (ftext, fnum) = headline(f);
        let (otext, onum) = headline(o);
        let ratio = match (onum, fnum) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}× {}", a / b, headline_name(o.scenario)),
            _ => "–".into(),
        };
        let incomplete = if o.complete && f.complete {
            ""
        } else {
            " **(incomplete)**"
        };
        println!(
            "| `{}`{incomplete} | {} | {unit} | {:.2} ({:.2} + {:.2}) | {:.2} ({:.2} + {:.2}) | {cpu_ratio} | {ftext} | {otext} | {ratio} | {:.2} / {:.2}; {:.1} / {:.1} |",
            o.command,
            ours.cores(),
            fu + fk,
            fu,
            fk,
            ou + ok,
            ou,
            ok,
            floor.load.load1,
            ours.load.load1,
            f.usage.other_cpu,
            o.usage.other_cpu,
        );
    }
}

/// The whole set: our server's table per core setting, the ratio table, and
/// every run as a JSON line.
pub fn print_set(machine: &Machine, runs: &[Run]) {
    println!("\n{}\n", machine.line());
    for pinned in [false, true] {
        let ours: Vec<&Run> = runs
            .iter()
            .filter(|r| r.server == "ours" && r.pinned == pinned)
            .collect();
        if ours.is_empty() {
            continue;
        }
        println!(
            "phx-server, cores {}:\n",
            if pinned {
                "pinned (server on core 0, generator on the others)"
            } else {
                "shared by server and generator"
            }
        );
        println!("| what | command | result | cost |");
        println!("|---|---|---|---|");
        for r in ours {
            println!("{}", r.outcome.row());
        }
        println!();
    }
    if runs.iter().any(|r| r.server == "floor") {
        println!("ours / floor (the floor: `phx-bench floor`, the same deliveries with no channels, PubSub, presence or JSON):");
        print_ratios(runs, "floor");
        println!();
    }
    if runs.iter().any(|r| r.server == "phoenix") {
        println!("ours / Phoenix (real Phoenix hosting the conformance app, `--phoenix`):");
        print_ratios(runs, "phoenix");
        println!();
    }
    println!("{}", machine.json());
    for r in runs {
        println!("{}", r.json(&machine.date));
    }
}
