//! The process's metrics (served at `GET /metrics` by `routes::metrics`): its
//! counters (requests per route with their
//! latency, preflights per code, deployments ended per status and code with their
//! durations, bytes pulled) and, read from the database at each scrape,
//! deployments per status, the queue's depth and stored credentials per health.
//! OpenMetrics text (which Prometheus reads), through `prometheus-client`.
//!
//! Every label value comes from a closed set: a client that could choose one could
//! make a new series with each request (a histogram is ~20 lines kept for the
//! process's life). Methods are HTTP's own or `other`, routes the matched
//! templates, statuses what the handlers answer, codes and deployment statuses
//! `&'static str` of the enums they name (a type a request's text cannot become);
//! the gauges read at a scrape are the statuses the store writes from its enums.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Http {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    method: &'static str,
    route: String,
}

/// A request the ingress routed: the service's id (server-made, one per service
/// created here: a closed set no request can grow) and the status's class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct App {
    service: String,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppService {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Code {
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Ended {
    status: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndedStatus {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Status {
    status: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    requests: Family<Http, Counter>,
    latency: Histograms<Route>,
    preflights: Family<Code, Counter>,
    ended: Family<Ended, Counter>,
    deploy_seconds: Histograms<EndedStatus>,
    pulled_bytes: Counter,
    deployments: Family<Status, Gauge>,
    queue: Gauge,
    credentials: Family<Status, Gauge>,
    app_requests: Family<App, Counter>,
    app_latency: Histograms<AppService>,
}

fn latency_buckets() -> Histogram {
    // 1 ms to ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

fn deploy_buckets() -> Histogram {
    // 0.1 s to ~27 min.
    Histogram::new(exponential_buckets(0.1, 2.0, 15))
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::with_prefix("berth");
        let m = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_buckets),
            preflights: Family::default(),
            ended: Family::default(),
            deploy_seconds: Family::new_with_constructor(deploy_buckets),
            pulled_bytes: Counter::default(),
            deployments: Family::default(),
            queue: Gauge::default(),
            credentials: Family::default(),
            app_requests: Family::default(),
            app_latency: Family::new_with_constructor(latency_buckets),
            registry: Registry::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            m.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer (to the first byte of a streamed answer), by route",
            m.latency.clone(),
        );
        registry.register(
            "preflights",
            "Registry preflights run (Test Connection, saves, checks), by code",
            m.preflights.clone(),
        );
        registry.register(
            "deployments_ended",
            "Deployments this replica ran to their end, by status and failure code",
            m.ended.clone(),
        );
        registry.register(
            "deployment_duration_seconds",
            "From claim to DEPLOYED or FAILED, by status",
            m.deploy_seconds.clone(),
        );
        registry.register(
            "pulled_bytes",
            "Blob bytes downloaded from registries",
            m.pulled_bytes.clone(),
        );
        registry.register(
            "deployments",
            "Deployments in the database, by status",
            m.deployments.clone(),
        );
        registry.register(
            "queue_depth",
            "Deployments waiting for a worker (PENDING_DEPLOY)",
            m.queue.clone(),
        );
        registry.register(
            "credentials",
            "Stored credentials of live services, by health",
            m.credentials.clone(),
        );
        registry.register(
            "app_requests",
            "Requests the ingress routed to apps, by service id and status class",
            m.app_requests.clone(),
        );
        registry.register(
            "app_request_duration_seconds",
            "From a routed request's head to the end of its answer, by service id",
            m.app_latency.clone(),
        );
        Metrics { registry, ..m }
    })
}

impl Metrics {
    /// A request the ingress routed to service `service_id`.
    pub fn app_request(&self, service_id: &str, status: u16, took: Duration) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.app_requests
            .get_or_create(&App {
                service: service_id.to_owned(),
                class,
            })
            .inc();
        self.app_latency
            .get_or_create(&AppService {
                service: service_id.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn preflight(&self, code: &'static str) {
        self.preflights.get_or_create(&Code { code }).inc();
    }

    pub fn deployment_ended(
        &self,
        status: &'static str,
        code: Option<&'static str>,
        took: Duration,
    ) {
        self.ended
            .get_or_create(&Ended {
                status,
                code: code.unwrap_or(""),
            })
            .inc();
        self.deploy_seconds
            .get_or_create(&EndedStatus { status })
            .observe(took.as_secs_f64());
    }

    pub fn pulled(&self, bytes: u64) {
        self.pulled_bytes.inc_by(bytes);
    }
}

impl Metrics {
    /// One answered request: `method` one of HTTP's own or `other`, `route` the
    /// matched template (never a path a client wrote).
    pub fn request(&self, method: &'static str, route: String, status: u16, took: Duration) {
        self.latency
            .get_or_create(&Route {
                method,
                route: route.clone(),
            })
            .observe(took.as_secs_f64());
        self.requests
            .get_or_create(&Http {
                method,
                route,
                status,
            })
            .inc();
    }

    /// The OpenMetrics text, with the database's counts (`None`: it did not
    /// answer, the gauges keep their last values).
    pub fn render(&self, counts: Option<berth_store::Counts>) -> Result<String, std::fmt::Error> {
        if let Some(counts) = counts {
            self.deployments.clear();
            let mut pending = 0;
            for (status, n) in counts.deployments {
                if status == "PENDING_DEPLOY" {
                    pending = n;
                }
                self.deployments.get_or_create(&Status { status }).set(n);
            }
            self.queue.set(pending);
            self.credentials.clear();
            for (status, n) in counts.credentials {
                self.credentials.get_or_create(&Status { status }).set(n);
            }
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}
