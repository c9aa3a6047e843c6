//! A scrape's view of the per-worker families: the same series of every worker added up.

use std::collections::BTreeMap;

use prometheus::proto::{MetricFamily, MetricType};

/// Every worker's families summed: the series of the same family and labels added up
/// (counters, gauges, histograms bucket by bucket), in label order.
pub(super) fn sum(workers: impl Iterator<Item = Vec<MetricFamily>>) -> Vec<MetricFamily> {
    use std::collections::btree_map::Entry;
    type Labels = Vec<(String, String)>;
    let labels = |m: &prometheus::proto::Metric| -> Labels {
        m.get_label().iter().map(|l| (l.name().to_string(), l.value().to_string())).collect()
    };
    let mut out: BTreeMap<String, (MetricFamily, BTreeMap<Labels, prometheus::proto::Metric>)> = BTreeMap::new();
    for families in workers {
        for mut family in families {
            let metrics = family.take_metric();
            let name = family.name().to_string();
            let (into, series) = out.entry(name).or_insert_with(|| (family, BTreeMap::new()));
            let kind = into.get_field_type();
            for metric in metrics {
                match series.entry(labels(&metric)) {
                    Entry::Vacant(e) => {
                        e.insert(metric);
                    }
                    Entry::Occupied(mut e) => add(e.get_mut(), &metric, kind),
                }
            }
        }
    }
    out.into_values()
        .map(|(mut family, series)| {
            family.set_metric(series.into_values().collect());
            family
        })
        .collect()
}

/// Adds `from`'s value into `into`'s, both of type `kind`.
fn add(into: &mut prometheus::proto::Metric, from: &prometheus::proto::Metric, kind: MetricType) {
    use prometheus::proto::{Counter, Gauge, Histogram};
    match kind {
        MetricType::COUNTER => {
            let mut c = Counter::default();
            c.set_value(into.get_counter().get_value() + from.get_counter().get_value());
            into.set_counter(c);
        }
        MetricType::GAUGE => {
            let mut g = Gauge::default();
            g.set_value(into.get_gauge().get_value() + from.get_gauge().get_value());
            into.set_gauge(g);
        }
        MetricType::HISTOGRAM => {
            let (a, b) = (into.get_histogram(), from.get_histogram());
            let mut h = Histogram::default();
            h.set_sample_count(a.get_sample_count() + b.get_sample_count());
            h.set_sample_sum(a.get_sample_sum() + b.get_sample_sum());
            let mut buckets = a.get_bucket().to_vec();
            for (bucket, other) in buckets.iter_mut().zip(b.get_bucket()) {
                bucket.set_cumulative_count(bucket.cumulative_count() + other.cumulative_count());
            }
            h.set_bucket(buckets);
            into.set_histogram(h);
        }
        // snigate has no summaries or untyped metrics.
        MetricType::SUMMARY | MetricType::UNTYPED => {}
    }
}
