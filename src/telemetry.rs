//! Prometheus metrics: one [`Registry`] per process, text made by the `prometheus` crate.
//!
//! catchd's counters stay where they are counted (atomics in the capture threads, the
//! core, the blockers, the bus …). What exposes them is a [`Source`]: at each scrape it
//! reads its counters into [`Metrics`], where every family has a name, a type and a help
//! text. The `prometheus` crate merges the families of all sources, sorts them and writes
//! the text exposition format (0.0.4: what Prometheus scrapes and `promtool check metrics`
//! reads), escaping label values and help texts. No module writes metric text by hand.

use std::sync::{Arc, Mutex};

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};

/// Something whose counters a scrape reads.
pub trait Source: Send + Sync {
    /// Reads the counters into `m`.
    fn collect(&self, m: &mut Metrics);
}

impl<F: Fn(&mut Metrics) + Send + Sync> Source for F {
    fn collect(&self, m: &mut Metrics) {
        self(m);
    }
}

/// The families one scrape collects.
#[derive(Default)]
pub struct Metrics {
    families: Vec<MetricFamily>,
}

/// One family being filled: samples, each with its labels.
pub struct Family<'a> {
    mf: &'a mut MetricFamily,
    kind: MetricType,
    timestamp_ms: i64,
}

/// A family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (restarts from 0 with the process).
    Counter,
    /// Goes up and down.
    Gauge,
}

impl Metrics {
    /// A family of type `kind`.
    pub fn of(&mut self, kind: Kind, name: &str, help: &str) -> Family<'_> {
        match kind {
            Kind::Counter => self.counter(name, help),
            Kind::Gauge => self.gauge(name, help),
        }
    }

    /// A counter family (by convention its name ends in `_total`).
    pub fn counter(&mut self, name: &str, help: &str) -> Family<'_> {
        self.family(name, help, MetricType::COUNTER)
    }

    /// A gauge family.
    pub fn gauge(&mut self, name: &str, help: &str) -> Family<'_> {
        self.family(name, help, MetricType::GAUGE)
    }

    fn family(&mut self, name: &str, help: &str, kind: MetricType) -> Family<'_> {
        let mut mf = MetricFamily::default();
        mf.set_name(name.to_string());
        mf.set_help(help.to_string());
        mf.set_field_type(kind);
        self.families.push(mf);
        let mf = self.families.last_mut().expect("just pushed");
        Family {
            mf,
            kind,
            timestamp_ms: 0,
        }
    }
}

impl Family<'_> {
    /// Stamps the samples that follow with a time (Unix milliseconds).
    pub fn at_ms(mut self, ms: i64) -> Self {
        self.timestamp_ms = ms;
        self
    }

    /// Adds a sample with `labels`.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        let mut m = proto::Metric::default();
        m.set_label(
            labels
                .iter()
                .map(|(k, v)| {
                    let mut l = proto::LabelPair::default();
                    l.set_name((*k).to_string());
                    l.set_value((*v).to_string());
                    l
                })
                .collect(),
        );
        if self.kind == MetricType::COUNTER {
            let mut c = proto::Counter::default();
            c.set_value(value);
            m.set_counter(c);
        } else {
            let mut g = proto::Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        }
        if self.timestamp_ms != 0 {
            m.set_timestamp_ms(self.timestamp_ms);
        }
        self.mf.mut_metric().push(m);
        self
    }

    /// The family's one sample, without labels.
    pub fn value(mut self, value: f64) {
        self.sample(&[], value);
    }
}

/// A count as a sample value (exact up to 2^53, which no counter here reaches).
#[allow(clippy::cast_precision_loss)]
pub fn count(n: u64) -> f64 {
    n as f64
}

/// The process's metrics: every source, collected at each scrape.
#[derive(Clone)]
pub struct Registry {
    sources: Arc<Mutex<Vec<Arc<dyn Source>>>>,
    inner: prometheus::Registry,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry::new()
    }
}

/// The one collector the `prometheus` registry knows: it asks every source.
struct Sources(Arc<Mutex<Vec<Arc<dyn Source>>>>);

impl Collector for Sources {
    fn desc(&self) -> Vec<&Desc> {
        // The families are known only when collected (per-ident, per-worker names).
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let sources = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut m = Metrics::default();
        for s in sources {
            s.collect(&mut m);
        }
        m.families
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        let sources = Arc::new(Mutex::new(Vec::new()));
        let inner = prometheus::Registry::new();
        inner
            .register(Box::new(Sources(sources.clone())))
            .expect("the first collector of a new registry");
        Registry { sources, inner }
    }

    /// Adds a source.
    pub fn add(&self, s: impl Source + 'static) {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::new(s));
    }

    /// The text exposition of everything the sources hold now.
    pub fn render(&self) -> String {
        encode(&self.inner.gather())
    }

    /// [`Registry::render`] as an HTTP answer.
    pub fn response(&self) -> Response {
        let mut r = self.render().into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(prometheus::TEXT_FORMAT),
        );
        r
    }
}

/// The text format of `families`.
fn encode(families: &[MetricFamily]) -> String {
    let mut out = String::with_capacity(8192);
    if let Err(e) = prometheus::TextEncoder::new().encode_utf8(families, &mut out) {
        // Only a family without samples or a bad name does this: a bug, shown, not
        // hidden behind a half page.
        tracing::error!(error = %e, "Cannot write the metrics.");
    }
    out
}

/// One family's text, for pages that are not a process's metrics (BHR's
/// `/bhr/api/metrics`, made from the registry's state at a time).
pub fn render(fill: impl FnOnce(&mut Metrics)) -> String {
    let mut m = Metrics::default();
    fill(&mut m);
    m.families.retain(|f| !f.get_metric().is_empty());
    encode(&m.families)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_help_are_escaped_and_families_merge_across_sources() {
        let r = Registry::new();
        r.add(|m: &mut Metrics| {
            m.counter("catchd_x_total", "things \\ seen\nhere")
                .sample(&[("ident", "a\"b\\c\nd")], 3.0);
        });
        r.add(|m: &mut Metrics| {
            m.counter("catchd_x_total", "things \\ seen\nhere")
                .sample(&[("ident", "plain")], 1.0);
            m.gauge("catchd_empty", "no samples");
        });
        let text = r.render();
        assert_eq!(
            text,
            "# HELP catchd_x_total things \\\\ seen\\nhere\n\
             # TYPE catchd_x_total counter\n\
             catchd_x_total{ident=\"a\\\"b\\\\c\\nd\"} 3\n\
             catchd_x_total{ident=\"plain\"} 1\n"
        );
    }

    #[test]
    fn samples_can_carry_a_timestamp() {
        let t = render(|m| {
            m.gauge("bhr_pending_total", "total hosts pending")
                .at_ms(1_795_269_129_847)
                .sample(&[("type", "block")], 4.0);
        });
        assert!(
            t.ends_with("bhr_pending_total{type=\"block\"} 4 1795269129847\n"),
            "{t}"
        );
    }
}
