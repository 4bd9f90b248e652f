//! One scrape of the agent's `/metrics`, parsed from the Prometheus text format, and looked up
//! by name and labels. Tests assert through these series (and `status --json`, see
//! [`crate::agent`]) rather than through log wording.

use std::{collections::HashMap, io, net::SocketAddr, time::Duration};

use crate::clients::http_get_path;

/// `name{labels}` → value, as one scrape found them.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    series: HashMap<String, f64>,
}

impl Metrics {
    /// Scrapes `http://ADDR/metrics`.
    pub fn scrape(addr: SocketAddr) -> io::Result<Metrics> {
        let (body, _) = http_get_path(addr, "/metrics", Duration::from_secs(5))?;
        Ok(Metrics::parse(&body))
    }

    /// Parses the Prometheus text format.
    pub fn parse(text: &str) -> Metrics {
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_string(), value.parse().ok()?))
            })
            .collect();
        Metrics { series }
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = f64> + 'a {
        self.series
            .iter()
            .filter(move |(series, _)| {
                series.split('{').next() == Some(name)
                    && labels
                        .iter()
                        .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
            })
            .map(|(_, v)| *v)
    }

    /// The value of the one series named `name` whose labels include every `labels` pair;
    /// 0 if there is none (a counter not yet incremented). Panics if several match: the test
    /// meant [`Metrics::sum`] or forgot a label.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let matching: Vec<f64> = self.matching(name, labels).collect();
        match matching.as_slice() {
            [] => 0.0,
            [one] => *one,
            many => panic!("{name} {labels:?} matches {} series", many.len()),
        }
    }

    /// The sum over every series named `name` whose labels include every `labels` pair (e.g.
    /// all successful wakes of a host, whatever tier they came from).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).sum()
    }

    /// Every series named `name` that has label `label`, as (the label's value, the series'
    /// value), sorted by the label's value.
    pub fn by_label(&self, name: &str, label: &str) -> Vec<(String, f64)> {
        let mut found: Vec<(String, f64)> = (self.series.iter())
            .filter(|(series, _)| series.split('{').next() == Some(name))
            .filter_map(|(series, value)| {
                let (_, rest) = ["{", ","]
                    .iter()
                    .find_map(|sep| series.split_once(&format!("{sep}{label}=\"")))?;
                let (label_value, _) = rest.split_once('"')?;
                Some((label_value.to_string(), *value))
            })
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }
}

#[cfg(test)]
#[allow(
    clippy::float_cmp,
    reason = "the values compared are whole counts (or exact binary fractions) carried in f64, so equality is exact"
)]
mod tests {
    use super::*;

    #[test]
    fn values_are_found_by_name_and_a_subset_of_labels() {
        let m = Metrics::parse(
            "# HELP imag_wakes_total x\n\
             imag_wakes_total{from=\"absent\",host=\"web\",reason=\"\",result=\"ok\"} 1\n\
             imag_wakes_total{from=\"stopped\",host=\"web\",reason=\"\",result=\"ok\"} 2\n\
             imag_ring_buffer_lost_packets 0\n",
        );
        assert_eq!(
            m.value("imag_wakes_total", &[("from", "stopped"), ("host", "web")]),
            2.0
        );
        assert_eq!(m.sum("imag_wakes_total", &[("result", "ok")]), 3.0);
        assert_eq!(m.value("imag_wakes_total", &[("host", "db")]), 0.0);
        assert_eq!(m.value("imag_ring_buffer_lost_packets", &[]), 0.0);
    }

    #[test]
    fn series_are_listed_by_one_label() {
        let m = Metrics::parse(
            "imag_datapath_packets_total{verdict=\"held\"} 3\n\
             imag_datapath_packets_total{verdict=\"dropped_denied\"} 1\n\
             imag_wakes_total{from=\"absent\",result=\"ok\"} 1\n\
             imag_x_total{result=\"ok\",xresult=\"no\"} 1\n",
        );
        assert_eq!(
            m.by_label("imag_datapath_packets_total", "verdict"),
            vec![
                ("dropped_denied".to_string(), 1.0),
                ("held".to_string(), 3.0)
            ]
        );
        assert_eq!(
            m.by_label("imag_wakes_total", "result"),
            vec![("ok".to_string(), 1.0)]
        );
        assert_eq!(
            m.by_label("imag_x_total", "xresult"),
            vec![("no".to_string(), 1.0)]
        );
        assert!(m.by_label("imag_wakes_total", "host").is_empty());
    }
}
