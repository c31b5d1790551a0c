//! `memory`: N idle connections, ramped gently, each joined to one channel — one plain
//! channel, a presence room of its own, or one of R shared presence rooms (the chat
//! room / document shape). Reports server RSS growth per connection and the server
//! CPU the ramp cost, counting every join answered and every channel still open.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::client::{self, Tally};
use crate::report::{group, object, Outcome};
use crate::server::{Meter, Server};

/// The `memory` scenario's parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct MemoryArgs {
    /// Connections to hold (keep under ~19 000 here: the open-files limit is 20 000).
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Track every connection in presence in its room.
    #[arg(long)]
    pub presence: bool,
    /// Rooms the connections share (connection i joins room i mod R); without it,
    /// presence puts each connection in a room of its own and plain joins share one.
    #[arg(long)]
    pub rooms: Option<usize>,
    /// Connections opened per second (the ramp); 0: as fast as `--in-flight` allows.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Connects (with their joins) in flight at once: 200 is a fast ramp, 10 a gentle one.
    #[arg(long, default_value_t = 200)]
    pub in_flight: usize,
    /// Source addresses the connections come from, spread over 127.0.0.1,
    /// 127.0.0.2, … (1: the kernel's choice of 127.0.0.1).
    #[arg(long, default_value_t = 1)]
    pub sources: u8,
    /// Seconds the connections are held idle after the ramp before RSS is read.
    #[arg(long, default_value_t = 0.0)]
    pub hold: f64,
}

impl MemoryArgs {
    fn command(&self) -> String {
        let mut c = format!("phx-bench memory --connections {}", self.connections);
        if let Some(r) = self.rooms {
            c.push_str(&format!(" --rooms {r}"));
        }
        if self.presence {
            c.push_str(" --presence");
        }
        if self.rate != 1000.0 {
            c.push_str(&format!(" --rate {}", self.rate));
        }
        if self.in_flight != 200 {
            c.push_str(&format!(" --in-flight {}", self.in_flight));
        }
        if self.sources != 1 {
            c.push_str(&format!(" --sources {}", self.sources));
        }
        if self.hold > 0.0 {
            c.push_str(&format!(" --hold {}", self.hold));
        }
        c
    }

    fn shape(&self) -> String {
        match (self.presence, self.rooms) {
            (true, Some(r)) => format!(
                "{r} shared rooms, each connection tracked in presence in its room ({} members per room)",
                self.connections.div_ceil(r.max(1))
            ),
            (true, None) => "each connection tracked in presence in a room of its own".into(),
            (false, Some(r)) => format!("{r} shared plain channels"),
            (false, None) => "one plain channel".into(),
        }
    }
}

/// Runs the scenario.
pub async fn run(server: &Server, a: &MemoryArgs) -> Result<Outcome, String> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.rss();
    let url = server.url();
    let n = a.connections;
    let (presence, rooms) = (a.presence, a.rooms.map(|r| r.max(1)));
    let tally = Arc::new(Tally::default());
    let meter = Meter::start(server);
    let sources = a.sources.max(1);
    let results = client::ramp(n, Some(a.rate), a.in_flight, |i| {
        let url = url.clone();
        let tally = tally.clone();
        async move {
            let (topic, payload) = match (presence, rooms) {
                (true, Some(r)) => (
                    format!("room:mem-{}", i % r),
                    format!(r#"{{"user":"u{i}"}}"#),
                ),
                (true, None) => (format!("room:mem-{i}"), format!(r#"{{"user":"u{i}"}}"#)),
                (false, Some(r)) => (
                    format!("private:mem-{}", i % r),
                    r#"{"token":"letmein"}"#.into(),
                ),
                (false, None) => ("private:mem".into(), r#"{"token":"letmein"}"#.into()),
            };
            let source = (sources > 1)
                .then(|| Ipv4Addr::new(127, 0, 0, 1 + (i % usize::from(sources)) as u8));
            let mut ws = client::connect_from(&url, source).await?;
            client::join_on(&mut ws, 1, &topic, &payload).await?;
            Ok(client::drain(ws, &tally))
        }
    })
    .await;
    let ramp_wall = meter.read(server).wall;
    let (drains, failed, first_error) = client::opened(results);
    let answered = drains.len();
    // Let the server finish the diffs the last joins caused before reading its cost.
    server.settle(Duration::from_secs(60)).await;
    let usage = meter.read(server);
    tokio::time::sleep(Duration::from_secs_f64(a.hold.max(1.0))).await;
    let after = server.rss();
    let metrics = server.metrics().await?;
    let channels_open = server.channels_open(&metrics, answered);
    let closed = Tally::get(&tally.closed);
    let states = Tally::get(&tally.presence_states);
    let crashed = Tally::get(&tally.channel_errors);
    drop(drains);

    let per = after.saturating_sub(before) as f64 / n.max(1) as f64;
    let lost = (answered as u64).saturating_sub(channels_open).max(crashed) + failed as u64;
    let mut result = format!(
        "{:.1} KiB per connection (RSS {:.1} → {:.1} MiB); ramp {:.1} s {}; {} of {} joins answered, {} channels open",
        per / 1024.0,
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        ramp_wall,
        if a.rate > 0.0 {
            format!("at {}/s", group(a.rate))
        } else {
            format!("unpaced, {} connects in flight", a.in_flight)
        },
        group(answered as f64),
        group(n as f64),
        group(channels_open as f64),
    );
    if presence {
        result.push_str(&format!(
            "; ramp + settling cost the server {:.2} CPU s",
            usage.server_cpu
        ));
    }
    if let Some(e) = &first_error {
        result.push_str(&format!("; {failed} failed, first: {e}"));
    }
    if closed > 0 {
        result.push_str(&format!("; {closed} connections closed by the server"));
    }
    if crashed > 0 {
        result.push_str(&format!(
            "; {} channels crashed after their join (phx_error)",
            group(crashed as f64)
        ));
    }
    if presence && states < answered as u64 {
        result.push_str(&format!(
            "; {} of {} joiners got their presence_state",
            group(states as f64),
            group(answered as f64)
        ));
    }
    let complete = failed == 0 && lost == 0 && closed == 0;
    Ok(Outcome {
        scenario: "memory",
        what: format!(
            "memory per idle connection, {} connections, {}",
            group(n as f64),
            a.shape()
        ),
        command: a.command(),
        result,
        usage,
        figures: object(json!({
            "connections": n,
            "rooms": rooms,
            "presence": presence,
            "rate_per_s": a.rate,
            "rss_before_bytes": before,
            "rss_after_bytes": after,
            "bytes_per_connection": per.round(),
            "ramp_s": ramp_wall,
            "joins_answered": answered,
            "join_failures": failed,
            "channels_open": channels_open,
            "channels_lost": lost,
            "closed_by_server": closed,
            "channels_crashed": crashed,
            "presence_states_received": states,
        })),
        complete,
    })
}
