//! What a scenario reports and how: one [`Outcome`] per scenario, printed as a line
//! of text, as a JSON line, and as a row of the markdown table the README carries,
//! under a header describing the machine and the date.

use serde_json::{json, Map, Value};

use crate::server::{cores, Usage};

/// The result of one scenario.
pub struct Outcome {
    /// Short machine-readable name (`memory`, `latency`, ...).
    pub scenario: &'static str,
    /// What was measured, in words (the table's first column).
    pub what: String,
    /// The command that reproduces it.
    pub command: String,
    /// The result in words (the table's third column).
    pub result: String,
    /// Wall-clock and CPU time of the measured phase.
    pub usage: Usage,
    /// Every figure, for the JSON line.
    pub figures: Map<String, Value>,
    /// Whether the scenario met its own correctness checks (every join answered,
    /// nothing missing...). Performance targets are not checked here.
    pub complete: bool,
}

impl Outcome {
    /// The cost column: server CPU beside wall-clock, and who limited the figure.
    fn cost(&self) -> String {
        let u = &self.usage;
        let mut s = format!(
            "wall {:.2} s, server CPU {:.2} s ({:.0} % kernel), generator CPU {:.2} s",
            u.wall,
            u.server_cpu,
            100.0 * u.server_system_cpu / u.server_cpu.max(0.01),
            u.generator_cpu
        );
        if u.generator_limited() {
            s.push_str("; **generator-limited**");
        }
        if u.shared() {
            s.push_str(&format!("; other processes {:.1} CPU s", u.other_cpu));
        }
        s
    }

    /// The human-readable line printed when the scenario ends.
    pub fn line(&self) -> String {
        let flag = if self.complete { "" } else { " [INCOMPLETE]" };
        format!(
            "{}: {}{flag}\n    ({})",
            self.scenario,
            self.result,
            self.cost()
        )
    }

    /// The JSON line: every figure plus the usage.
    pub fn json(&self, date: &str) -> String {
        let u = &self.usage;
        let mut obj = Map::new();
        obj.insert("scenario".into(), json!(self.scenario));
        obj.insert("command".into(), json!(self.command));
        obj.insert("date".into(), json!(date));
        obj.insert("complete".into(), json!(self.complete));
        obj.insert("wall_s".into(), json!(round3(u.wall)));
        obj.insert("server_cpu_s".into(), json!(round3(u.server_cpu)));
        obj.insert(
            "server_system_cpu_s".into(),
            json!(round3(u.server_system_cpu)),
        );
        obj.insert("generator_cpu_s".into(), json!(round3(u.generator_cpu)));
        obj.insert("other_cpu_s".into(), json!(round3(u.other_cpu)));
        obj.insert("generator_limited".into(), json!(u.generator_limited()));
        for (k, v) in &self.figures {
            obj.insert(k.clone(), v.clone());
        }
        Value::Object(obj).to_string()
    }

    /// The markdown table row.
    pub fn row(&self) -> String {
        let flag = if self.complete {
            ""
        } else {
            " **(incomplete)**"
        };
        format!(
            "| {} | `{}` | {}{flag} | {} |",
            self.what,
            self.command,
            self.result,
            self.cost()
        )
    }
}

/// Rounds to three decimals for the JSON lines.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Formats a count with thin groups of three digits (`1 250 000`).
pub fn group(n: f64) -> String {
    let n = n.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    if n < 0 {
        out.insert(0, '-');
    }
    out
}

/// The machine the figures were taken on.
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub ram_gib: f64,
    pub kernel: String,
    pub date: String,
}

impl Machine {
    /// Reads `/proc` for the CPU model, RAM and kernel; the date is today's (UTC).
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown CPU".to_owned(), |(_, m)| m.trim().to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let ram_kib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".to_owned(), |k| k.trim().to_owned());
        Machine {
            cpu,
            cores: cores(),
            ram_gib: ram_kib / 1024.0 / 1024.0,
            kernel,
            date: today_utc(),
        }
    }

    /// One line for the top of the table.
    pub fn line(&self) -> String {
        format!(
            "Machine: {}, {} cores, {:.0} GiB RAM, Linux {}; taken {} (UTC). The load generator runs on the same cores as the server.",
            self.cpu, self.cores, self.ram_gib, self.kernel, self.date
        )
    }

    /// The JSON line describing the machine.
    pub fn json(&self) -> String {
        json!({
            "machine": {
                "cpu": self.cpu,
                "cores": self.cores,
                "ram_gib": round3(self.ram_gib),
                "kernel": self.kernel,
            },
            "date": self.date,
        })
        .to_string()
    }
}

/// Today's date and time in UTC as `YYYY-MM-DD HH:MM`, from the system clock
/// (days to civil date after Howard Hinnant's algorithm).
fn today_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    civil_utc(secs)
}

/// `YYYY-MM-DD HH:MM` (UTC) of a Unix time in seconds.
fn civil_utc(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// The fields of a JSON object literal (empty for anything else).
pub fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_times_become_civil_dates() {
        assert_eq!(civil_utc(0), "1970-01-01 00:00");
        assert_eq!(civil_utc(951_782_400), "2000-02-29 00:00");
        assert_eq!(civil_utc(1_796_041_935), "2026-11-30 12:32");
    }

    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(group(0.0), "0");
        assert_eq!(group(999.0), "999");
        assert_eq!(group(1_000.0), "1 000");
        assert_eq!(group(1_338_764.4), "1 338 764");
        assert_eq!(group(-12_345.0), "-12 345");
    }
}
