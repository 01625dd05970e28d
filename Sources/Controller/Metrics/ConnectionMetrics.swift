import Prometheus

/// What the connection guard did: open connections, and those it closed (timeouts, the cap).
struct ConnectionMetrics: Sendable {
    /// Connections open now.
    let open: Gauge
    /// Connections accepted since start (a client reusing its connection adds none per request).
    let accepted: Counter
    /// Idle connections closed to make room for a new one at the cap.
    let shed: Counter
    /// New connections closed at once because the cap was reached and every connection was busy.
    let refused: Counter
    /// Connections closed by a timeout, by reason.
    private let timedOut: [ConnectionTimeouts.Reason: Counter]

    init(registry: PrometheusCollectorRegistry) {
        func name(_ metric: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
            MetricNameDescriptor(namespace: "ferry", subsystem: "connections", metricName: metric, unitName: unit, helpText: help)
        }
        open = registry.makeGauge(descriptor: name("open", "count", "Client connections open."))
        accepted = registry.makeCounter(descriptor: name("accepted", "total", "Client connections accepted."))
        shed = registry.makeCounter(descriptor: name("shed", "total", "Idle connections closed to admit a new one at the connection cap."))
        refused = registry.makeCounter(descriptor: name("refused", "total", "New connections closed at the cap because none was idle."))
        let timeouts = name("timed_out", "total", "Connections closed by a timeout, by reason (header, idle, body, slow-reader).")
        var counters: [ConnectionTimeouts.Reason: Counter] = [:]
        for reason in ConnectionTimeouts.Reason.allCases {
            counters[reason] = registry.makeCounter(descriptor: timeouts, labels: [("reason", reason.rawValue)])
        }
        timedOut = counters
    }

    func recordTimeout(_ reason: ConnectionTimeouts.Reason) {
        timedOut[reason]?.increment()
    }
}
