//! `xnos show counters`: per-port counters with rates from two samples.

use xnos::api::{Client, ClientError, PortView};

use crate::{
    args::CountersArgs,
    render::{Cell, Column, RateUnit, Widths, json_rows, table_in},
};

/// The widest rate [`crate::render::rate`] writes (`123kpps`, `2.27Mbps`).
const RATE_WIDTH: usize = 8;

/// One port's counters and rates over the last sample.
pub(crate) struct CounterRow {
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
    drop_pps: f64,
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
                drop_pps: rate(c.total_drops(), old.map(|o| o.total_drops())),
            }
        })
        .collect()
}

pub(crate) fn columns() -> Vec<Column<CounterRow>> {
    fn pps(r: f64) -> Cell {
        Cell::Rate(r, RateUnit::Pps)
    }
    fn bps(r: f64) -> Cell {
        Cell::Rate(r, RateUnit::Bps)
    }
    vec![
        Column::new("PORT", |r: &CounterRow| Cell::text(&r.port)).elide(8),
        Column::new("RX-PACKETS", |r: &CounterRow| Cell::Count(r.rx_packets)),
        Column::new("TX-PACKETS", |r: &CounterRow| Cell::Count(r.tx_packets)),
        Column::new("DROPS", |r: &CounterRow| Cell::Count(r.drops)),
        Column::new("RX-PPS", |r: &CounterRow| pps(r.rx_pps)).min_width(RATE_WIDTH),
        Column::new("TX-PPS", |r: &CounterRow| pps(r.tx_pps)).min_width(RATE_WIDTH),
        Column::new("RX-BPS", |r: &CounterRow| bps(r.rx_bps)).min_width(RATE_WIDTH),
        Column::new("TX-BPS", |r: &CounterRow| bps(r.tx_bps)).min_width(RATE_WIDTH),
        Column::new("RX-BYTES", |r: &CounterRow| Cell::Count(r.rx_bytes)).wide(),
        Column::new("TX-BYTES", |r: &CounterRow| Cell::Count(r.tx_bytes)).wide(),
        Column::new("FLOODED", |r: &CounterRow| Cell::Count(r.flooded)).wide(),
        Column::new("DROP-PPS", |r: &CounterRow| pps(r.drop_pps))
            .min_width(RATE_WIDTH)
            .wide(),
    ]
}

pub async fn run(client: &Client, args: CountersArgs) -> Result<(), ClientError> {
    if !(0.05..=3600.0).contains(&args.interval) {
        return Err(ClientError::Refused(
            "--interval must be between 0.05 and 3600 seconds".into(),
        ));
    }
    let interval = std::time::Duration::from_secs_f64(args.interval);
    let mut before: Vec<PortView> = client.get("/v1/ports").await?;
    let mut widths = Widths::default();
    let mut shown = 0;
    loop {
        tokio::time::sleep(interval).await;
        let after: Vec<PortView> = client.get("/v1/ports").await?;
        let rows = counter_rows(&before, &after, args.interval);
        let json = json_rows(&columns(), &rows);
        if args.format.json && args.watch {
            // One sample per line, for `jq` or a log.
            println!(
                "{}",
                serde_json::to_string(&json).expect("JSON values serialise")
            );
        } else if args.format.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&json).expect("JSON values serialise")
            );
        } else {
            if args.watch {
                // Clear the screen and go home, like top.
                print!("\x1b[H\x1b[2J");
                println!("xnos counters, every {}s (Ctrl-C to stop)\n", args.interval);
            }
            print!(
                "{}",
                table_in(&columns(), &rows, args.format.wide, &mut widths)
            );
        }
        shown += 1;
        if !args.watch || args.count.is_some_and(|c| shown >= c) {
            return Ok(());
        }
        before = after;
    }
}

/// A port with long counters and rates, for the table tests of `show`.
#[cfg(test)]
pub(crate) fn sample_rows() -> Vec<CounterRow> {
    vec![CounterRow {
        port: "enp0s31f6-uplink-to-core".into(),
        rx_packets: 123_456_789_012,
        tx_packets: 123_456_789_012,
        rx_bytes: 1,
        tx_bytes: 2,
        drops: 1_234_567,
        flooded: 3,
        rx_pps: 1_234_567.0,
        tx_pps: 999.0,
        rx_bps: 9.87e9,
        tx_bps: 0.0,
        drop_pps: 12.0,
    }]
}
