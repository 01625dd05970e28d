import Prometheus

/// Ferry's own metrics, registered directly in the app's `PrometheusCollectorRegistry`.
///
/// They do not go through the global `MetricsSystem`, which may be bootstrapped only once per process: tests build
/// many apps, each with its own registry, and read them back. (`serve` still bootstraps the global system with the same
/// registry, so metrics of libraries that use swift-metrics land there too.)
/// Why an enrolment was refused for the instance it is (or is not) on: the API error code and the metric's label.
enum EnrolmentRefusal: String, CaseIterable, Sendable {
    case attestationRequired = "attestation_required"
    case attestationInvalid = "attestation_invalid"
    case accountNotAllowed = "account_not_allowed"
    case instanceEnrolled = "instance_enrolled"
}

struct ControllerMetrics: Sendable {
    let registry: PrometheusCollectorRegistry
    let releasesPublished: Counter
    let artifactsStored: Counter
    let artifactBytesStored: Counter
    let statusReports: Counter
    /// Agent identities seen reporting from two hosts in turn (`AgentIdentityWatch`), once per conflict and window.
    let identityConflicts: Counter
    let silentAgentsRemoved: Counter
    /// Enrolments refused for want of a valid instance identity, or of an instance enrolled already, by reason: what
    /// someone holding an enrollment token but not an instance of the fleet tries.
    private let enrolmentsRefused: [EnrolmentRefusal: Counter]
    let desiredStateFull: Counter
    let desiredStateNotModified: Counter
    /// Desired-state polls answered by `DesiredStatePollHandler` before the router (the rest went to the route).
    let desiredStateHandled: Counter
    /// Of those, the 304s `DesiredStateFastPath` answered from the raw bytes, before the HTTP decoder.
    let desiredStateFastPath: Counter
    /// Status reports answered by `DesiredStatePollHandler` before the router (the rest went to the route).
    let statusReportsHandled: Counter
    let longPollWaiters: Gauge
    /// Event streams (`GET /v1/events/stream`) being answered.
    let eventStreams: Gauge
    /// Transactions of the status write queue, and the reports they carried.
    let statusBatches: Counter
    let statusBatchedReports: Counter
    /// How long each status batch took to commit.
    let statusBatchDuration: DurationHistogram
    let agents: Gauge
    let staleAgents: Gauge
    /// Per-route request counts and durations.
    let requests: RequestMetrics
    /// Open connections, and those closed by timeouts or the connection cap.
    let connections: ConnectionMetrics

    /// Counts one enrolment refused for `reason`.
    func enrolmentRefused(_ reason: EnrolmentRefusal) {
        enrolmentsRefused[reason]?.increment()
    }

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
        silentAgentsRemoved = registry.makeCounter(
            descriptor: name("agents_removed_silent", "total", "Agents removed for sending no status report for --remove-silent-agents-after.")
        )
        identityConflicts = registry.makeCounter(
            descriptor: name(
                "agent_identity_conflicts",
                "total",
                "Agent identities whose status reports came from two hosts in turn: two running agents share one enrolment."
            )
        )
        let refused = name(
            "enrolments_refused",
            "total",
            "Enrolments refused for the instance: no valid signed instance identity, another account's, or an instance enrolled already."
        )
        enrolmentsRefused = Dictionary(
            uniqueKeysWithValues: EnrolmentRefusal.allCases.map {
                ($0, registry.makeCounter(descriptor: refused, labels: [("reason", $0.rawValue)]))
            }
        )
        let responses = name("desired_state_responses", "total", "Desired-state answers by status code.")
        desiredStateFull = registry.makeCounter(descriptor: responses, labels: [("code", "200")])
        desiredStateNotModified = registry.makeCounter(descriptor: responses, labels: [("code", "304")])
        desiredStateHandled = registry.makeCounter(
            descriptor: name("desired_state_handler_answers", "total", "Desired-state polls answered before the router (included in the answers).")
        )
        desiredStateFastPath = registry.makeCounter(
            descriptor: name(
                "desired_state_fast_path_answers",
                "total",
                "Desired-state 304s answered from the raw request bytes, before the HTTP decoder (included in the handler's answers)."
            )
        )
        statusReportsHandled = registry.makeCounter(
            descriptor: name(
                "status_report_handler_answers",
                "total",
                "Status reports answered before the router (included in the accepted reports)."
            )
        )
        statusBatches = registry.makeCounter(descriptor: name("status_batches", "total", "Transactions of the status write queue."))
        statusBatchedReports = registry.makeCounter(
            descriptor: name("status_batched_reports", "total", "Status reports committed by the status write queue.")
        )
        statusBatchDuration = registry.makeDurationHistogram(
            descriptor: name("status_batch_duration", "seconds", "Time to commit one batch of status reports."),
            buckets: [
                .milliseconds(1), .milliseconds(2.5), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
                .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5),
            ]
        )
        longPollWaiters = registry.makeGauge(descriptor: name("long_poll", "waiters", "Desired-state requests waiting for a change."))
        eventStreams = registry.makeGauge(descriptor: name("event_streams", "open", "Event streams (GET /v1/events/stream) being answered."))
        agents = registry.makeGauge(descriptor: name("agents", "count", "Enrolled agents."))
        staleAgents = registry.makeGauge(descriptor: name("agents_stale", "count", "Agents without a status report for three poll intervals."))
    }

    /// One batch of `size` status reports committed in `duration`.
    func statusBatch(size: Int, duration: Duration) {
        statusBatches.increment()
        statusBatchedReports.increment(by: Int64(size))
        statusBatchDuration.record(duration)
    }
}
