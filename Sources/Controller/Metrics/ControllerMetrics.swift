import Prometheus

/// Ferry's own metrics, registered directly in the app's `PrometheusCollectorRegistry`.
///
/// They do not go through the global `MetricsSystem`, which may be bootstrapped only once per process: tests build
/// many apps, each with its own registry, and read them back. (`serve` still bootstraps the global system with the same
/// registry, so metrics of libraries that use swift-metrics land there too.)
struct ControllerMetrics: Sendable {
    let registry: PrometheusCollectorRegistry
    let releasesPublished: Counter
    let artifactsStored: Counter
    let artifactBytesStored: Counter
    let statusReports: Counter
    let desiredStateFull: Counter
    let desiredStateNotModified: Counter
    let longPollWaiters: Gauge
    let agents: Gauge
    let staleAgents: Gauge
    /// Per-route request counts and durations.
    let requests: RequestMetrics
    /// Open connections, and those closed by timeouts or the connection cap.
    let connections: ConnectionMetrics

    init(registry: PrometheusCollectorRegistry) {
        func name(_ metric: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
            MetricNameDescriptor(namespace: "ferry", metricName: metric, unitName: unit, helpText: help)
        }
        self.registry = registry
        requests = RequestMetrics(registry: registry)
        connections = ConnectionMetrics(registry: registry)
        releasesPublished = registry.makeCounter(descriptor: name("releases_published", "total", "Releases accepted by POST /v1/releases."))
        artifactsStored = registry.makeCounter(descriptor: name("artifacts_stored", "total", "New artifacts stored."))
        artifactBytesStored = registry.makeCounter(descriptor: name("artifact_stored", "bytes_total", "Bytes of new artifacts stored."))
        statusReports = registry.makeCounter(descriptor: name("status_reports", "total", "Status reports accepted from agents."))
        let responses = name("desired_state_responses", "total", "Desired-state answers by status code.")
        desiredStateFull = registry.makeCounter(descriptor: responses, labels: [("code", "200")])
        desiredStateNotModified = registry.makeCounter(descriptor: responses, labels: [("code", "304")])
        longPollWaiters = registry.makeGauge(descriptor: name("long_poll", "waiters", "Desired-state requests waiting for a change."))
        agents = registry.makeGauge(descriptor: name("agents", "count", "Enrolled agents."))
        staleAgents = registry.makeGauge(descriptor: name("agents_stale", "count", "Agents without a status report for three poll intervals."))
    }
}
