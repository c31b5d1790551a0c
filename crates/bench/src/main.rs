//! `phx-bench`: the project's load generator. Every scenario starts a fresh
//! `phx-server --conformance` (the binary next to this one, or `--server`) on a free
//! loopback port, drives it with real WebSocket clients, and reports wall-clock time
//! beside the server's CPU time (from `/proc/<pid>/stat`) and the generator's own, so
//! that each figure says whether the server or the generator was the limit.
//!
//! - `memory`: idle connections in one channel, rooms of their own or R shared
//!   presence rooms: server RSS per connection, CPU cost of the ramp.
//! - `latency`: steady-rate fan-out with timestamped broadcasts: p50/p99/max.
//! - `fanout`: fan-out at full speed: deliveries per second and per server CPU-second.
//! - `echo`: request/reply round trips.
//! - `presence`: how fast phoenix.js-style mirrors settle after a mass leave.
//! - `storm`: a join storm at the generator's fastest rate: joins answered, channels lost.
//! - `churn`: join/leave cycles with presence and abrupt closes: nothing left behind.
//! - `standard`: the whole set, one fresh server per scenario, printed as one markdown
//!   table and JSON lines (`scripts/bench` builds release binaries and runs it).
//! - `floor`: the minimal server that gives the machine's floor for each scenario
//!   (`--against floor|both` runs scenarios against it; `both` prints ours / floor).
//!
//! `--against phoenix --phoenix <build>` runs each scenario against real Phoenix
//! (a build from `shared/phoenix-ref`) and then against ours, and prints ours / Phoenix.
//!
//! `--pin on|both` runs the server on one core and the generator on the other.
//!
//! Everything stays on 127.0.0.1 and every run is bounded in count and time.

mod churn;
mod client;
mod compare;
mod echo;
mod fanout;
mod floor;
mod memory;
mod pin;
mod presence;
mod report;
mod server;
mod storm;

use clap::{Parser, Subcommand, ValueEnum};

use compare::Run;
use report::Machine;
use server::{Kind, Server};

#[derive(Parser, Debug)]
#[command(
    name = "phx-bench",
    about = "Load generator and benchmark set for phx-server, and the floor server to compare it with"
)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
    /// Path of the phx-server binary (default: next to phx-bench). A wrapper script
    /// works too (e.g. one that runs the server under valgrind), as long as the
    /// server keeps the wrapper's process id (`exec`).
    #[arg(long, global = true)]
    server: Option<String>,
    /// Path of the executable that serves the floor as `<path> floor` (default:
    /// this one); a wrapper that `exec`s phx-bench works too, as for `--server`.
    #[arg(long, global = true)]
    floor_server: Option<String>,
    /// Which server each scenario runs against: phx-server (`ours`), the minimal
    /// floor server (`floor`), or the floor then ours, with ours / floor (`both`),
    /// or real Phoenix (`--phoenix`) then ours, with ours / Phoenix (`phoenix`).
    #[arg(long, global = true, value_enum, default_value_t = Against::Ours)]
    against: Against,
    /// A real Phoenix build (made by `shared/phoenix-ref/build.sh`: a directory
    /// with `start-bg.sh`, `stop.sh` and the conformance app), for `--against phoenix`.
    #[arg(long, global = true)]
    phoenix: Option<String>,
    /// Cores: shared by server and generator (`off`), the server on core 0 and the
    /// generator on the others (`on`), or both runs one after the other (`both`).
    #[arg(long, global = true, value_enum, default_value_t = Pin::Off)]
    pin: Pin,
}

/// The `--against` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Against {
    Ours,
    Floor,
    Both,
    Phoenix,
}

/// The `--pin` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Pin {
    Off,
    On,
    Both,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Server memory per idle connection (and the ramp's CPU cost).
    Memory(memory::MemoryArgs),
    /// Steady-rate fan-out with end-to-end latency percentiles.
    Latency(fanout::LatencyArgs),
    /// Broadcast fan-out at full speed to the subscribers of one topic.
    Fanout(fanout::FanoutArgs),
    /// Request/reply round trips.
    Echo(echo::EchoArgs),
    /// Presence mirrors settling after a mass leave.
    Presence(presence::PresenceArgs),
    /// A join storm at the generator's fastest rate.
    Storm(storm::StormArgs),
    /// Join/leave churn with presence; checks nothing is left behind.
    Churn(churn::ChurnArgs),
    /// The standard set: every scenario at its standard size, one table.
    Standard(StandardArgs),
    /// Runs the floor server (the benchmark set starts it itself).
    Floor(floor::FloorArgs),
}

#[derive(clap::Args, Debug, Clone)]
struct StandardArgs {
    /// Multiplies every count (connections, clients, cycles) — e.g. 0.1 for a quick check.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Run only these scenarios (by name: memory, latency, fanout, echo, presence,
    /// storm, churn), comma-separated.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// One scenario with its parameters.
#[derive(Debug, Clone)]
enum Scenario {
    Memory(memory::MemoryArgs),
    Latency(fanout::LatencyArgs),
    Fanout(fanout::FanoutArgs),
    Echo(echo::EchoArgs),
    Presence(presence::PresenceArgs),
    Storm(storm::StormArgs),
    Churn(churn::ChurnArgs),
}

impl Scenario {
    fn name(&self) -> &'static str {
        match self {
            Scenario::Memory(_) => "memory",
            Scenario::Latency(_) => "latency",
            Scenario::Fanout(_) => "fanout",
            Scenario::Echo(_) => "echo",
            Scenario::Presence(_) => "presence",
            Scenario::Storm(_) => "storm",
            Scenario::Churn(_) => "churn",
        }
    }

    /// Whether the floor has a counterpart worth comparing: churn checks that
    /// nothing is left behind, which says nothing about the floor.
    fn has_floor(&self) -> bool {
        !matches!(self, Scenario::Churn(_))
    }

    /// Whether to run it against real Phoenix: not churn (its checks read our
    /// `/metrics`), and not the 19 000-connection ramp (the same per-connection
    /// figures as the 10 000 one, at over 200 KiB per connection there).
    fn has_phoenix(&self) -> bool {
        match self {
            Scenario::Churn(_) => false,
            Scenario::Memory(a) => a.connections <= 10_000,
            _ => true,
        }
    }

    /// Connections the generator (and so the server) holds at once at most.
    fn connections(&self) -> usize {
        match self {
            Scenario::Memory(a) => a.connections,
            Scenario::Latency(a) => a.subscribers + 1,
            Scenario::Fanout(a) => a.subscribers + 1,
            Scenario::Echo(a) => a.clients,
            Scenario::Presence(a) => a.clients,
            Scenario::Storm(a) => a.clients,
            Scenario::Churn(a) => a.clients + a.rooms as usize,
        }
    }

    /// Starts a fresh server, runs the scenario against it, stops the server.
    async fn run(&self, kind: &Kind, pinned: bool) -> Result<Run, String> {
        let load = compare::Load::now();
        let server = Server::start(kind, pinned.then_some(pin::SERVER_CORE))?;
        let outcome = match self {
            Scenario::Memory(a) => memory::run(&server, a).await,
            Scenario::Latency(a) => fanout::steady(&server, a).await,
            Scenario::Fanout(a) => fanout::full(&server, a).await,
            Scenario::Echo(a) => echo::run(&server, a).await,
            Scenario::Presence(a) => presence::run(&server, a).await,
            Scenario::Storm(a) => storm::run(&server, a).await,
            Scenario::Churn(a) => churn::run(&server, a).await,
        };
        drop(server);
        Ok(Run {
            server: kind.label(),
            pinned,
            load,
            outcome: outcome?,
        })
    }
}

/// The standard set, every count multiplied by `scale`.
fn standard(scale: f64) -> Vec<Scenario> {
    let n = |count: f64| ((count * scale).round() as usize).max(1);
    let memory = |connections: usize, rooms: Option<usize>, presence: bool| {
        Scenario::Memory(memory::MemoryArgs {
            connections,
            presence,
            rooms,
            rate: 1000.0,
            in_flight: 200,
            sources: 1,
            hold: 0.0,
        })
    };
    vec![
        memory(n(10_000.0), None, false),
        memory(n(10_000.0), Some(100), true),
        memory(n(19_000.0), Some(100), true),
        Scenario::Latency(fanout::LatencyArgs {
            subscribers: n(1_000.0),
            rate: 50.0,
            seconds: 10.0,
        }),
        Scenario::Fanout(fanout::FanoutArgs {
            subscribers: n(1_000.0),
            messages: 1_000,
        }),
        Scenario::Echo(echo::EchoArgs {
            clients: 50,
            seconds: 5.0,
        }),
        Scenario::Presence(presence::PresenceArgs {
            clients: n(1_000.0),
            leave: n(500.0),
        }),
        Scenario::Storm(storm::StormArgs {
            clients: n(10_000.0),
            concurrency: None,
            rooms: None,
        }),
        Scenario::Churn(churn::ChurnArgs {
            cycles: n(100_000.0) as u64,
            clients: 200,
            rooms: 100,
            abrupt_every: 10,
            max_seconds: 120.0,
        }),
    ]
}

fn main() {
    let args = Args::parse();
    if let Cmd::Floor(a) = &args.cmd {
        let served = tokio::runtime::Runtime::new()
            .map_err(|e| e.to_string())
            .and_then(|rt| rt.block_on(floor::serve(a)));
        if let Err(e) = served {
            eprintln!("phx-bench floor: {e}");
            std::process::exit(1);
        }
        return;
    }
    let limit = server::raise_open_files_limit();
    let machine = Machine::describe();
    let (set, table) = match args.cmd {
        Cmd::Memory(a) => (vec![Scenario::Memory(a)], false),
        Cmd::Latency(a) => (vec![Scenario::Latency(a)], false),
        Cmd::Fanout(a) => (vec![Scenario::Fanout(a)], false),
        Cmd::Echo(a) => (vec![Scenario::Echo(a)], false),
        Cmd::Presence(a) => (vec![Scenario::Presence(a)], false),
        Cmd::Storm(a) => (vec![Scenario::Storm(a)], false),
        Cmd::Churn(a) => (vec![Scenario::Churn(a)], false),
        Cmd::Standard(a) => {
            let set = standard(a.scale)
                .into_iter()
                .filter(|s| a.only.is_empty() || a.only.iter().any(|o| o == s.name()))
                .collect();
            (set, true)
        }
        Cmd::Floor(_) => unreachable!("served above"),
    };
    if table {
        eprintln!("phx-bench: {} (open-files limit {limit})", machine.line());
    }
    let pins: &[bool] = match args.pin {
        Pin::Off => &[false],
        Pin::On => &[true],
        Pin::Both => &[false, true],
    };
    let ours = Kind::Ours(args.server.clone());
    let floor = Kind::Floor(args.floor_server.clone());
    let phoenix = match (&args.phoenix, args.against) {
        (Some(dir), _) => Kind::Phoenix(dir.clone()),
        (None, Against::Phoenix) => {
            eprintln!("phx-bench: --against phoenix needs --phoenix <build directory>");
            std::process::exit(2);
        }
        (None, _) => Kind::Phoenix(String::new()),
    };
    let mut runs = Vec::new();
    let mut failures = 0;
    for &pinned in pins {
        // The runtime is built after the pinning, so its workers inherit the mask.
        let cores = match pin::generator(pinned) {
            Ok(cores) => cores,
            Err(e) => {
                eprintln!("phx-bench: cannot set the generator's cores: {e}");
                std::process::exit(1);
            }
        };
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores)
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("phx-bench: cannot start the runtime: {e}");
                std::process::exit(1);
            }
        };
        for scenario in &set {
            // Each side needs a descriptor per connection plus a few of its own.
            if scenario.connections() as u64 + 200 > limit {
                eprintln!(
                    "phx-bench: {}: {} connections do not fit under the open-files limit ({limit})",
                    scenario.name(),
                    scenario.connections()
                );
                failures += 1;
                continue;
            }
            let kinds: Vec<&Kind> = match args.against {
                Against::Ours => vec![&ours],
                Against::Floor => vec![&floor],
                Against::Both if scenario.has_floor() => vec![&floor, &ours],
                Against::Both => vec![&ours],
                Against::Phoenix if scenario.has_phoenix() => vec![&phoenix, &ours],
                Against::Phoenix => continue,
            };
            for kind in kinds {
                match runtime.block_on(scenario.run(kind, pinned)) {
                    Ok(run) => {
                        println!("{}", run.line());
                        if !table {
                            println!("{}", run.json(&machine.date));
                        }
                        runs.push(run);
                    }
                    Err(e) => {
                        eprintln!("phx-bench: {} against {kind}: {e}", scenario.name());
                        failures += 1;
                    }
                }
            }
        }
    }
    if table {
        compare::print_set(&machine, &runs);
    } else if args.against == Against::Both {
        compare::print_ratios(&runs, "floor");
    } else if args.against == Against::Phoenix {
        compare::print_ratios(&runs, "phoenix");
    }
    if failures > 0 {
        std::process::exit(1);
    }
}
