#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Why a release failed on one agent, with the evidence an operator would otherwise SSH in for: the stage that failed,
/// the health gate's verdict (exit code and signal of each instance, the health URL's status and body excerpt, the
/// deadline), and the last lines each failing app wrote to stderr and stdout.
///
/// Carried by the newest `ReleaseFailure` of a service that has one (`failures[].diagnosis` in a status report),
/// kept in the agent's `state.json`. Everything in it is masked by the agent (instance env values become `${NAME}`)
/// and bounded: see the limits below, which the controller enforces when it parses a report.
package struct FailureDiagnosis: Sendable, Equatable, Codable {
    /// What the agent was doing when the release failed.
    package enum Stage: String, Sendable, Equatable, Codable, CaseIterable {
        /// Applying the release before any app action (the process table could not be read).
        case install
        /// Starting an app (or deleting and starting it again, when a reload cannot change it).
        case start
        /// Reloading a running app into the new release.
        case reload
        /// Watching the release come up: every instance online, the health URL answering 2xx, for `stableSeconds`.
        case healthGate = "health-gate"
    }

    /// The kind of failure.
    package enum Cause: String, Sendable, Equatable, Codable, CaseIterable {
        /// An instance exited and the process manager gave up on it (`errored`, or `stopped` while it should run).
        case crashed
        /// An instance showed `online` without a live process for longer than the grace period.
        case notRunning = "not-running"
        /// The deadline passed before the release was healthy for its stable window.
        case timedOut = "timed-out"
        /// The process manager refused or failed a command (start, reload, delete, reading its table).
        case commandFailed = "command-failed"
    }

    /// The health URL's last answer during the watch.
    package struct HealthProbe: Sendable, Equatable, Codable {
        /// The URL as the release wrote it (placeholders, never the filled-in values).
        package var url: String
        /// The HTTP status, when it answered.
        package var status: Int64?
        /// The start of the answer's body (masked, control characters replaced), when it answered.
        package var body: String?
        /// Why it did not answer (connection refused, timeout), when it did not.
        package var error: String?

        package init(url: String, status: Int64? = nil, body: String? = nil, error: String? = nil) {
            self.url = url
            self.status = status
            self.body = body
            self.error = error
        }
    }

    /// One instance of a failing release's apps, as the process manager showed it when the release failed.
    package struct Instance: Sendable, Equatable, Codable {
        package var app: String
        package var pmId: Int64
        /// The process manager's status (`errored`, `stopped`, `online`, ...).
        package var status: String
        package var restarts: Int64
        /// Exit code of its last exit, when it exited with one.
        package var exitCode: Int64?
        /// The signal that ended its last run (`SIGKILL`, `SIGSEGV`, ...), when one did.
        package var signal: String?

        package init(app: String, pmId: Int64, status: String, restarts: Int64, exitCode: Int64? = nil, signal: String? = nil) {
            self.app = app
            self.pmId = pmId
            self.status = status
            self.restarts = restarts
            self.exitCode = exitCode
            self.signal = signal
        }
    }

    /// Which output a log tail is from.
    package enum Stream: String, Sendable, Equatable, Codable, CaseIterable {
        case stderr
        case stdout
    }

    /// The last lines of one log file of a failing app.
    package struct LogTail: Sendable, Equatable, Codable {
        package var app: String
        /// The instances writing to this file (one per instance, or all of them when the process manager merges logs).
        package var pmIds: [Int64]
        package var stream: Stream
        /// Oldest first, without line ends; at most `maximumLines`, together at most `maximumBytes` bytes.
        package var lines: [String]
        /// The file holds more than these lines.
        package var truncated: Bool

        package init(app: String, pmIds: [Int64], stream: Stream, lines: [String], truncated: Bool) {
            self.app = app
            self.pmIds = pmIds
            self.stream = stream
            self.lines = lines
            self.truncated = truncated
        }
    }

    package var stage: Stage
    package var cause: Cause
    /// When the agent saw the failure.
    package var at: Date
    /// The release's health deadline, for `timed-out`.
    package var deadlineSeconds: Int64?
    /// The health URL's last answer, when the release names one and it was asked.
    package var health: HealthProbe?
    /// The failing release's instances, failing ones first.
    package var instances: [Instance]
    /// stderr first, then stdout, of the failing instances first.
    package var logs: [LogTail]

    // MARK: Limits

    /// Most lines of one log tail.
    package static let maximumLines = 50
    /// Most bytes (the lines' UTF-8, line ends not counted) of one log tail.
    package static let maximumBytes = 8 * 1024
    /// Most instances listed.
    package static let maximumInstances = 64
    /// Most log tails (stderr and stdout of 8 instances).
    package static let maximumLogs = 16
    /// Longest health body excerpt, in bytes.
    package static let maximumBodyBytes = 512
    /// Longest probe error, in bytes.
    package static let maximumErrorBytes = 1024

    package init(
        stage: Stage,
        cause: Cause,
        at: Date,
        deadlineSeconds: Int64? = nil,
        health: HealthProbe? = nil,
        instances: [Instance] = [],
        logs: [LogTail] = []
    ) {
        self.stage = stage
        self.cause = cause
        self.at = at
        self.deadlineSeconds = deadlineSeconds
        self.health = health
        self.instances = instances
        self.logs = logs
    }

    /// Bytes of log text carried (what the report's size budget counts).
    package var logBytes: Int { logs.reduce(0) { $0 + $1.lines.reduce(0) { $0 + $1.utf8.count } } }

    /// Every text of the diagnosis (log lines, body, errors) passed through `transform`: for masking secrets.
    package func mapText(_ transform: (String) -> String) -> FailureDiagnosis {
        var copy = self
        if var probe = copy.health {
            probe.body = probe.body.map(transform)
            probe.error = probe.error.map(transform)
            copy.health = probe
        }
        for index in copy.logs.indices {
            copy.logs[index].lines = copy.logs[index].lines.map(transform)
        }
        return copy
    }

    // MARK: JSON

    package init(json: JSONValue, path: String) throws(DocumentError) {
        var reader = try ObjectReader(json, path: path)
        stage = try reader.required("stage", Field.enumeration(Stage.self))
        cause = try reader.required("cause", Field.enumeration(Cause.self))
        at = try reader.required("at", Timestamp.field)
        deadlineSeconds = try reader.optional("deadlineSeconds", Field.integer(in: 0...86_400))
        health = try reader.optional("health") { (value, path) throws(DocumentError) in
            var probe = try ObjectReader(value, path: path)
            let result = HealthProbe(
                url: try probe.required("url", Field.string(maxLength: Limits.urlLength)),
                status: try probe.optional("status", Field.integer(in: 100...999)),
                body: try probe.optional("body", Self.line(maxLength: Self.maximumBodyBytes)),
                error: try probe.optional("error", Self.line(maxLength: Self.maximumErrorBytes))
            )
            try probe.rejectUnknownFields()
            return result
        }
        instances = try reader.required(
            "instances",
            Field.list(limit: Self.maximumInstances) { (value, path) throws(DocumentError) in
                var instance = try ObjectReader(value, path: path)
                let result = Instance(
                    app: try instance.required("app", Field.string(maxLength: 64)),
                    pmId: try instance.required("pmId", Field.integer(in: 0...Int64(Int32.max))),
                    status: try instance.required("status", Field.string(maxLength: 32)),
                    restarts: try instance.required("restarts", Field.integer(in: 0...Int64(Int32.max))),
                    exitCode: try instance.optional("exitCode", Field.integer(in: Int64(Int32.min)...Int64(Int32.max))),
                    signal: try instance.optional("signal", Field.string(maxLength: 32))
                )
                try instance.rejectUnknownFields()
                return result
            }
        )
        logs = try reader.required(
            "logs",
            Field.list(limit: Self.maximumLogs) { (value, path) throws(DocumentError) in
                var tail = try ObjectReader(value, path: path)
                let result = LogTail(
                    app: try tail.required("app", Field.string(maxLength: 64)),
                    pmIds: try tail.required("pmIds", Field.list(limit: Self.maximumInstances, Field.integer(in: 0...Int64(Int32.max)))),
                    stream: try tail.required("stream", Field.enumeration(Stream.self)),
                    lines: try tail.required("lines", Field.list(limit: Self.maximumLines, Self.line(maxLength: Self.maximumBytes))),
                    truncated: try tail.required("truncated", Field.bool)
                )
                try tail.rejectUnknownFields()
                let bytes = result.lines.reduce(0) { $0 + $1.utf8.count }
                guard bytes <= Self.maximumBytes else {
                    throw .tooLarge(field: tail.path(of: "lines"), limit: Self.maximumBytes, actual: bytes)
                }
                return result
            }
        )
        try reader.rejectUnknownFields()
    }

    package var json: JSONValue {
        var fields: [String: JSONValue] = [
            "stage": .string(stage.rawValue), "cause": .string(cause.rawValue), "at": .string(Timestamp.format(at)),
            "instances": .array(
                instances.map { instance in
                    var fields: [String: JSONValue] = [
                        "app": .string(instance.app), "pmId": .integer(instance.pmId), "status": .string(instance.status),
                        "restarts": .integer(instance.restarts),
                    ]
                    if let code = instance.exitCode { fields["exitCode"] = .integer(code) }
                    if let signal = instance.signal { fields["signal"] = .string(signal) }
                    return .object(fields)
                }
            ),
            "logs": .array(
                logs.map { tail in
                    .object([
                        "app": .string(tail.app), "pmIds": .array(tail.pmIds.map { .integer($0) }), "stream": .string(tail.stream.rawValue),
                        "lines": .array(tail.lines.map { .string($0) }), "truncated": .bool(tail.truncated),
                    ])
                }
            ),
        ]
        if let deadlineSeconds { fields["deadlineSeconds"] = .integer(deadlineSeconds) }
        if let health {
            var probe: [String: JSONValue] = ["url": .string(health.url)]
            if let status = health.status { probe["status"] = .integer(status) }
            if let body = health.body { probe["body"] = .string(body) }
            if let error = health.error { probe["error"] = .string(error) }
            fields["health"] = .object(probe)
        }
        return .object(fields)
    }

    /// One line of text: at most `maxLength` UTF-8 bytes, no line breaks or control characters except tab.
    static func line(maxLength: Int) -> (JSONValue, String) throws(DocumentError) -> String {
        { (value, path) throws(DocumentError) in
            guard case .string(let text) = value else { throw .wrongType(field: path, expected: "string", got: value.typeName) }
            guard text.utf8.count <= maxLength else { throw .tooLarge(field: path, limit: maxLength, actual: text.utf8.count) }
            if text.unicodeScalars.contains(where: { ($0.value < 0x20 && $0 != "\t") || $0.value == 0x7f }) {
                throw .invalidValue(field: path, reason: "line breaks and control characters other than tab are not allowed")
            }
            return text
        }
    }
}
