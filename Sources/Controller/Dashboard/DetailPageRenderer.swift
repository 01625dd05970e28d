import Foundation
import Mustache
import Shared

/// Renders the dashboard's detail pages (`DetailPageTemplate`): one agent, one rollout.
///
/// As on the fleet page, every value reaches the HTML through an escaping `{{variable}}` (`DashboardHTML`; log lines, messages, names
/// and health bodies come from apps, agents and operators), and every key a section reads is set explicitly in its
/// own context, so a missing value never picks up an outer one.
struct DetailPageRenderer: Sendable {
    private let agentTemplate: MustacheTemplate
    private let rolloutTemplate: MustacheTemplate

    /// - Throws: only if an embedded template were malformed (a programming error caught by the tests).
    init() throws {
        agentTemplate = try MustacheTemplate(string: DashboardHTML.pragma + DetailPageTemplate.agent)
        rolloutTemplate = try MustacheTemplate(string: DashboardHTML.pragma + DetailPageTemplate.rollout)
    }

    // MARK: Agent

    func render(_ detail: AgentDetail, now: Date, pollInterval: Duration) -> String {
        let record = detail.record
        let services: [[String: Any]] = detail.serviceNames.map { service in
            guard let entry = detail.statuses[service] else { return ["service": service, "reported": false, "phase": "none", "health": "unknown"] }
            let status = entry.status
            let current = status.currentFailure
            let older = status.failures.filter { $0 != current }.prefix(5)
            return [
                "service": service, "reported": true, "version": status.version ?? "no release", "serial": status.serial.map(String.init) ?? "-",
                "target": status.targetSerial.flatMap { $0 != status.serial ? String($0) : nil } ?? false,
                "phase": status.phase.rawValue, "health": status.health.rawValue, "message": status.message,
                "updatedAt": Timestamp.format(entry.updatedAt), "updatedAgo": DashboardRenderer.relative(entry.updatedAt, to: now),
                "hasProcesses": !status.processes.isEmpty, "processes": status.processes.map(Self.process(_:)),
                "failure": current.map(Self.failure(_:)) ?? false,
                "hasOlderFailures": !older.isEmpty,
                "olderFailures": older.map { ["serial": $0.serial, "kind": $0.kind, "reason": $0.reason] as [String: Any] },
            ]
        }
        let reports: [[String: Any]] = detail.history.map { entry in
            let at = Timestamp.format(entry.receivedAt)
            return [
                "services": entry.report.services.map { status -> [String: Any] in
                    [
                        "receivedAt": at, "time": DashboardRenderer.clockTime(at), "ago": DashboardRenderer.relative(entry.receivedAt, to: now),
                        "service": status.service, "serial": status.serial.map(String.init) ?? "-", "phase": status.phase.rawValue,
                        "health": status.health.rawValue, "message": status.message,
                    ]
                }
            ]
        }
        let context: [String: Any] = [
            "refreshSeconds": DashboardRenderer.refreshSeconds(for: pollInterval), "generatedAt": Timestamp.format(now),
            "id": record.id, "name": record.name, "hostname": record.hostname, "agentVersion": record.agentVersion ?? "",
            "processManager": record.processManager ?? "", "stale": detail.isStale,
            "lastSeen": record.lastSeen.map { DashboardRenderer.relative($0, to: now) } ?? "never",
            "lastSeenAt": record.lastSeen.map(Timestamp.format) ?? "none yet", "enrolledAt": Timestamp.format(record.enrolledAt),
            "instanceId": record.instanceID ?? false,
            "services": services, "hasReports": !reports.isEmpty, "reports": reports,
            "identityConflict": detail.identityConflict.map { conflict -> [String: Any] in
                [
                    "hostnames": conflict.hostnames.joined(separator: " and "),
                    "noticedAt": Timestamp.format(conflict.noticedAt),
                    "noticedAgo": DashboardRenderer.relative(conflict.noticedAt, to: now),
                ]
            } ?? false,
        ]
        return agentTemplate.render(context)
    }

    // MARK: Rollout

    /// How much of a rollout the page lists: its agents' rows (every failed agent first among them, in rollout order),
    /// and the failures shown with their evidence. A rollout of 10,000 agents made a page of 10,000 rows, re-rendered at
    /// every refresh; the counts above the table cover every agent, and `GET /v1/rollouts/{service}/{serial}` lists them all.
    struct Listing: Sendable {
        var rows = 500
        var failures = RolloutDetail.wholeTails
    }

    func render(_ detail: RolloutDetail, now: Date, pollInterval: Duration, listing: Listing = Listing()) -> String {
        let view = detail.view
        let rollout = view.rollout
        let counts = view.counts
        let sizes = rollout.waveSizes
        // The failed agents first, then the others, in rollout order; shown in rollout order.
        let failedIndices = view.agents.indices.filter { view.agents[$0].standing.progress == .failed }
        let otherIndices = view.agents.indices.filter { view.agents[$0].standing.progress != .failed }
        let listedIndices = (failedIndices + otherIndices).prefix(listing.rows).sorted()
        let agents: [[String: Any]] = listedIndices.map { view.agents[$0] }.map { agent in
            let status = detail.statuses[agent.id]?.status
            let name = agent.name ?? agent.id
            return [
                "name": name, "path": Self.pathSegment(name), "wave": agent.wave + 1, "reached": agent.reached,
                "progress": agent.standing.progress.rawValue, "serial": status?.serial.map(String.init) ?? "-",
                "phase": status.map { $0.phase.rawValue } ?? false, "health": status.map { $0.health.rawValue } ?? false,
                "message": status?.message ?? "no report yet",
            ]
        }
        let failures: [[String: Any]] = failedIndices.prefix(listing.failures).map { view.agents[$0] }.map { agent in
            let name = agent.name ?? agent.id
            return [
                "name": name, "path": Self.pathSegment(name), "failure": detail.failure(of: agent).map(Self.failure(_:)) ?? false,
                "kind": agent.standing.failureKind ?? "failed", "reason": agent.standing.failureReason ?? "",
            ]
        }
        let context: [String: Any] = [
            "refreshSeconds": DashboardRenderer.refreshSeconds(for: pollInterval), "generatedAt": Timestamp.format(now),
            "service": rollout.service, "serial": rollout.serial, "version": rollout.version, "state": rollout.state.rawValue,
            // 0 while the release awaits approval, as the fleet card and the JSON say (no agent has it yet).
            "wave": view.waveNumber, "waveCount": sizes.count,
            "strategy": rollout.strategy.description, "stableSerial": rollout.stableSerial.map(String.init) ?? "none",
            "waveStableSeconds": rollout.waveStable.components.seconds, "maxFailures": rollout.maxFailures,
            "createdAt": Timestamp.format(rollout.createdAt), "updatedAt": Timestamp.format(rollout.updatedAt),
            "reason": rollout.reason, "hasReason": !rollout.reason.isEmpty,
            "agents": counts.agents, "healthy": counts.healthy, "failed": counts.failed, "pending": counts.pending,
            "hasAgents": !view.agents.isEmpty, "hasFailures": !failures.isEmpty, "failures": failures,
            "unlistedAgents": view.agents.count - agents.count, "hasUnlistedAgents": agents.count < view.agents.count,
            "unlistedFailures": failedIndices.count - failures.count, "hasUnlistedFailures": failures.count < failedIndices.count,
        ]
        // `agents` is both a count (summary) and the table: the table's rows under their own key.
        var withRows = context
        withRows["agentRows"] = agents
        return rolloutTemplate.render(withRows)
    }

    // MARK: Parts

    private static func process(_ process: ProcessReport) -> [String: Any] {
        [
            "name": process.name, "pmId": process.pmId, "pid": process.pid.map(String.init) ?? "-", "status": process.status,
            "restarts": process.restarts, "uptime": process.uptimeSeconds.map(duration(_:)) ?? "-",
            "memory": megabytes(process.memoryBytes), "cpu": String(format: "%.1f%%", process.cpuPercent),
        ]
    }

    static func failure(_ failure: ReleaseFailure) -> [String: Any] {
        ["serial": failure.serial, "kind": failure.kind, "reason": failure.reason, "diagnosis": failure.diagnosis.map(diagnosis(_:)) ?? false]
    }

    private static func diagnosis(_ diagnosis: FailureDiagnosis) -> [String: Any] {
        var probe: [String: Any] = [:]
        if let health = diagnosis.health {
            probe = [
                "url": health.url, "hasStatus": health.status != nil, "status": health.status.map(String.init) ?? "",
                "hasError": health.error != nil, "error": health.error ?? "", "hasBody": health.body != nil, "body": health.body ?? "",
            ]
        }
        return [
            "stage": diagnosis.stage.rawValue, "cause": diagnosis.cause.rawValue, "at": Timestamp.format(diagnosis.at),
            "hasDeadline": diagnosis.deadlineSeconds != nil, "deadlineSeconds": diagnosis.deadlineSeconds.map(String.init) ?? "",
            "hasProbe": diagnosis.health != nil, "probe": probe,
            "hasInstances": !diagnosis.instances.isEmpty,
            "instances": diagnosis.instances.map { instance -> [String: Any] in
                [
                    "app": instance.app, "pmId": instance.pmId, "status": instance.status, "restarts": instance.restarts,
                    "exitCode": instance.exitCode.map(String.init) ?? "", "signal": instance.signal ?? "",
                ]
            },
            "hasLogs": !diagnosis.logs.isEmpty,
            "logs": diagnosis.logs.map { tail -> [String: Any] in
                [
                    "app": tail.app, "stream": tail.stream.rawValue, "pmIds": tail.pmIds.map(String.init).joined(separator: ", "),
                    "truncated": tail.truncated, "lineCount": tail.lines.count,
                    "text": tail.lines.map(TerminalText.droppingColors).joined(separator: "\n"),
                ]
            },
        ]
    }

    /// `name` percent-encoded as one path segment (everything but RFC 3986's unreserved characters).
    static func pathSegment(_ name: String) -> String {
        // A dot segment would be resolved away by the browser (a link to `/agents/..` goes to `/`).
        if name == "." || name == ".." { return String(repeating: "%2E", count: name.count) }
        var allowed = CharacterSet.alphanumerics.intersection(CharacterSet(charactersIn: Unicode.Scalar(0)...Unicode.Scalar(127)))
        allowed.insert(charactersIn: "-._~")
        return name.addingPercentEncoding(withAllowedCharacters: allowed) ?? ""
    }

    private static func duration(_ seconds: Int64) -> String {
        if seconds < 60 { return "\(seconds) s" }
        if seconds < 3600 { return "\(seconds / 60) min" }
        if seconds < 86_400 { return "\(seconds / 3600) h \(seconds % 3600 / 60) min" }
        return "\(seconds / 86_400) d \(seconds % 86_400 / 3600) h"
    }

    private static func megabytes(_ bytes: Int64) -> String {
        // Whole megabytes and tenths separately: `bytes * 10` would overflow on an absurd report.
        let tenths = bytes / (1 << 20) * 10 + bytes % (1 << 20) * 10 / (1 << 20)
        return "\(tenths / 10).\(tenths % 10) MB"
    }
}
