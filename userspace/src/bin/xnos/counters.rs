//! `xnos show counters`: per-port counters with rates from two samples.

use xnos::api::{Client, ClientError, PortView};

use crate::{args::CountersArgs, render::table};

/// One port's counters and rates, for `show counters --json`.
#[derive(serde::Serialize)]
#[serde(rename_all = "kebab-case")]
struct CounterRow {
    port: String,
    rx_packets: u64,
    tx_packets: u64,
    rx_bytes: u64,
    tx_bytes: u64,
    drops: u64,
    flooded: u64,
    rx_pps: f64,
    tx_pps: f64,
    rx_bps: f64,
    tx_bps: f64,
    drops_per_sec: f64,
}

fn counter_rows(before: &[PortView], after: &[PortView], secs: f64) -> Vec<CounterRow> {
    after
        .iter()
        .map(|p| {
            let old = before
                .iter()
                .find(|b| b.name == p.name)
                .map(|b| &b.counters);
            let rate = |now: u64, then: Option<u64>| {
                then.map_or(0.0, |t| now.saturating_sub(t) as f64 / secs)
            };
            let c = &p.counters;
            CounterRow {
                port: p.name.clone(),
                rx_packets: c.rx_packets,
                tx_packets: c.tx_packets,
                rx_bytes: c.rx_bytes,
                tx_bytes: c.tx_bytes,
                drops: c.total_drops(),
                flooded: c.flooded,
                rx_pps: rate(c.rx_packets, old.map(|o| o.rx_packets)),
                tx_pps: rate(c.tx_packets, old.map(|o| o.tx_packets)),
                rx_bps: 8.0 * rate(c.rx_bytes, old.map(|o| o.rx_bytes)),
                tx_bps: 8.0 * rate(c.tx_bytes, old.map(|o| o.tx_bytes)),
                drops_per_sec: rate(c.total_drops(), old.map(|o| o.total_drops())),
            }
        })
        .collect()
}

fn human_rate(value: f64, unit: &str) -> String {
    match value {
        v if v >= 1e9 => format!("{:.2}G{unit}", v / 1e9),
        v if v >= 1e6 => format!("{:.2}M{unit}", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k{unit}", v / 1e3),
        v => format!("{v:.0}{unit}"),
    }
}

fn render_counters(rows: &[CounterRow]) -> String {
    let mut table_rows = vec![
        [
            "PORT",
            "RX-PKTS",
            "TX-PKTS",
            "DROPS",
            "RX-RATE",
            "TX-RATE",
            "RX-BITS",
            "TX-BITS",
            "DROP-RATE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in rows {
        table_rows.push(vec![
            r.port.clone(),
            r.rx_packets.to_string(),
            r.tx_packets.to_string(),
            r.drops.to_string(),
            human_rate(r.rx_pps, "pps"),
            human_rate(r.tx_pps, "pps"),
            human_rate(r.rx_bps, "bps"),
            human_rate(r.tx_bps, "bps"),
            human_rate(r.drops_per_sec, "/s"),
        ]);
    }
    table(&table_rows)
}

pub async fn run(client: &Client, args: CountersArgs) -> Result<(), ClientError> {
    if !(0.05..=3600.0).contains(&args.interval) {
        return Err(ClientError::Refused(
            "--interval must be between 0.05 and 3600 seconds".into(),
        ));
    }
    let interval = std::time::Duration::from_secs_f64(args.interval);
    let mut before: Vec<PortView> = client.get("/v1/ports").await?;
    let mut shown = 0;
    loop {
        tokio::time::sleep(interval).await;
        let after: Vec<PortView> = client.get("/v1/ports").await?;
        let rows = counter_rows(&before, &after, args.interval);
        if args.format.json {
            println!("{}", serde_json::to_string(&rows).expect("serialises"));
        } else {
            if args.watch {
                // Clear the screen and go home, like top.
                print!("\x1b[H\x1b[2J");
                println!("xnos counters, every {}s (Ctrl-C to stop)\n", args.interval);
            }
            print!("{}", render_counters(&rows));
        }
        shown += 1;
        if !args.watch || args.count.is_some_and(|c| shown >= c) {
            return Ok(());
        }
        before = after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_in_human_units() {
        assert_eq!(human_rate(0.0, "pps"), "0pps");
        assert_eq!(human_rate(1500.0, "pps"), "1.5kpps");
        assert_eq!(human_rate(2_500_000.0, "bps"), "2.50Mbps");
        assert_eq!(human_rate(10e9, "bps"), "10.00Gbps");
    }
}
