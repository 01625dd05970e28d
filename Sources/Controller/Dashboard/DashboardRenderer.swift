import Foundation
import Mustache
import Shared

/// Renders a `FleetSnapshot` as the dashboard's HTML page.
///
/// Every value reaches the page through a Mustache `{{variable}}`, which escapes `<`, `>`, `&`, `"` and `'` and shows
/// control and bidirectional formatting characters as `\uXXXX` (`DashboardHTML`): agent names, messages and failure
/// reasons come from agents and operators and must never become markup, nor turn text around. Enumerated values
/// (phases, states, kinds) are also used as CSS classes and `data-` attributes, which the browser check and the
/// refresh script rely on.
struct DashboardRenderer: Sendable {
    private let template: MustacheTemplate

    /// The `Content-Security-Policy` the page is served with: nothing from elsewhere, inline styles, only the page's
    /// own refresh script (by hash) and same-origin fetches.
    static let contentSecurityPolicy =
        "default-src 'none'; style-src 'unsafe-inline'; script-src '\(DashboardTemplate.scriptHash)'; connect-src 'self'; "
        + "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

    /// - Throws: only if the embedded template were malformed (a programming error caught by the tests).
    init() throws {
        template = try MustacheTemplate(string: DashboardHTML.pragma + DashboardTemplate.page)
    }

    func render(_ fleet: FleetSnapshot) -> String {
        let now = fleet.generatedAt
        let serviceNames = fleet.services.map(\.name)
        // Every event's agent by name, also one the page of agents does not hold (another page, a filter).
        let names = fleet.eventAgentNames.merging(fleet.agents.map { ($0.record.id, $0.record.name) }) { first, _ in first }
        let services: [[String: Any]] = fleet.services.map { summary in
            [
                "name": summary.name, "version": summary.latestVersion ?? "", "serial": summary.latestSerial.map(String.init) ?? "",
                "hasRelease": summary.latestSerial != nil, "releases": summary.releaseCount, "agents": summary.agentCount,
            ]
        }
        let agents = fleet.agents.map { Self.row($0, services: serviceNames, now: now) }
        let rollouts = fleet.rollouts.map { Self.card($0, now: now) }
        let events = fleet.events.map { Self.line($0, names: names, now: now) }
        let openRollouts = fleet.rollouts.filter { $0.rollout.state.isOpen }
        let halted = fleet.rollouts.filter { $0.rollout.state == .halted }.count
        let query = fleet.query
        let first = fleet.agents.isEmpty ? 0 : query.offset + 1
        var context: [String: Any] = [
            "refreshSeconds": Self.refreshSeconds(for: fleet.pollInterval),
            "generatedAt": Timestamp.format(now),
            "agents": Self.counted(fleet.enrolled, "agent"), "staleCount": fleet.staleAgents,
            "services": Self.counted(fleet.services.count, "service"), "openRollouts": Self.counted(openRollouts.count, "open rollout"),
            "haltedCount": halted, "hasHalted": halted > 0,
            "hasServices": !fleet.services.isEmpty, "hasAgents": !fleet.agents.isEmpty,
            "hasRollouts": !rollouts.isEmpty, "hasEvents": !events.isEmpty,
            "columns": services, "rows": agents, "rollouts": rollouts, "events": events,
            "approvals": fleet.approvals.map(Self.approval), "hasApprovals": !fleet.approvals.isEmpty,
            "trustRoot": Self.trustText(fleet),
        ]
        // The summary section and the page of agents.
        context["summaryServices"] = fleet.summary.services.map(Self.summary(_:))
        context["phaseNames"] = Self.summaryPhases
        context["matching"] = fleet.matching
        context["offset"] = query.offset
        context["returned"] = fleet.agents.count
        context["first"] = first
        context["last"] = query.offset + fleet.agents.count
        context["limit"] = query.limit
        context["hasFilter"] = query.isFiltered
        context["failuresFirst"] = !query.byName
        context["filterText"] = Self.describe(query)
        // A page past the last agent (the fleet shrank under a page left open: its reloads keep the offset) says so and
        // links to the last page; before, it said "no agent matches" and "No agent has enrolled yet.".
        let pastTheEnd = fleet.agents.isEmpty && query.offset > 0 && fleet.matching > 0
        context["pastTheEnd"] = pastTheEnd
        context["lastPageQuery"] = query.queryString(offset: max(0, (fleet.matching - 1) / max(1, query.limit) * query.limit))
        context["noneEnrolled"] = fleet.enrolled == 0
        context["hasPrevious"] = query.offset > 0 && !pastTheEnd
        context["previousQuery"] = query.queryString(offset: max(0, query.offset - query.limit))
        context["hasNext"] = query.offset + fleet.agents.count < fleet.matching
        context["nextQuery"] = query.queryString(offset: query.offset + query.limit)
        return template.render(context)
    }

    /// A release awaiting approval: who published it, which release keys signed, how many more are needed.
    private static func approval(_ record: ReleaseRecord) -> [String: Any] {
        [
            "service": record.service, "serial": record.serial, "version": record.version, "publishedBy": record.publishedBy,
            "signed": record.signedBy.count, "required": record.signaturesRequired,
            "signers": record.signedBy.map { String($0.prefix(12)) }.joined(separator: ", "),
        ]
    }

    /// "trust root 2 (expires 2027-11-26)", or what is wrong with it.
    private static func trustText(_ fleet: FleetSnapshot) -> String {
        switch fleet.trust {
        case nil: return ""
        case .failure?: return "trust root chain broken"
        case .success(let root)?:
            if root.isFromTrustedKeys { return "trust root 1 (from --trusted-key)" }
            let expiry = Timestamp.format(root.root.expiresAt).prefix(10)
            return root.root.isExpired(at: fleet.generatedAt)
                ? "trust root \(root.version) EXPIRED on \(expiry)" : "trust root \(root.version) (expires \(expiry))"
        }
    }

    // MARK: Summary

    /// The phase columns of the summary tables, in order.
    static let summaryPhases = [
        DeployPhase.running.rawValue, DeployPhase.deploying.rawValue, DeployPhase.waiting.rawValue, DeployPhase.failed.rawValue,
        DeployPhase.rolledBack.rawValue, FleetQuery.unreported,
    ]

    private static func summary(_ service: FleetSummary.Service) -> [String: Any] {
        func link(_ adjust: (inout FleetQuery) -> Void) -> String {
            var query = FleetQuery()
            query.service = service.name
            adjust(&query)
            return query.queryString(offset: 0)
        }
        let versions: [[String: Any]] = service.versions.map { version in
            let cells: [[String: Any]] = summaryPhases.map { phase in
                let count = version.phases[phase] ?? 0
                return [
                    "phase": phase, "version": version.version ?? "", "count": count, "hasCount": count > 0,
                    "query": link { query in
                        // The row's serial and version, either one "none" (empty, for the version): a version published again
                        // under another serial is a row of its own, and so is a status with one and not the other (its cell
                        // listed every agent of the serial, or of the version whatever it ran). Agents with no status have
                        // neither.
                        if phase != FleetQuery.unreported {
                            query.version = version.version ?? ""
                            query.serial = version.serial.map(FleetQuery.SerialFilter.serial) ?? FleetQuery.SerialFilter.none
                        } else {
                            query.version = version.version
                        }
                        query.phase = phase
                    },
                ]
            }
            return [
                "version": version.version ?? "", "hasVersion": version.version != nil, "serial": version.serial.map(String.init) ?? "",
                "agents": version.agents, "hasFailing": version.failing > 0, "cells": cells,
            ]
        }
        return [
            "name": service.name, "agents": service.agents, "failing": service.failing, "hasFailing": service.failing > 0,
            "unhealthy": service.unhealthy, "hasUnhealthy": service.unhealthy > 0, "stale": service.stale, "hasStale": service.stale > 0,
            "unreported": service.unreported, "hasUnreported": service.unreported > 0, "versions": versions,
            "allQuery": link { _ in }, "failingQuery": link { $0.phase = FleetQuery.failing },
            "unhealthyQuery": link { $0.health = .unhealthy }, "staleQuery": link { $0.stale = true },
        ]
    }

    /// "service api, version 1.0.2, phase failed".
    static func describe(_ query: FleetQuery) -> String {
        var parts: [String] = []
        if let service = query.service { parts.append("service \(service)") }
        if let version = query.version { parts.append(version.isEmpty ? "no version reported" : "version \(version)") }
        switch query.serial {
        case .serial(let serial): parts.append("serial \(serial)")
        case .none?: parts.append("no release installed")
        case nil: break
        }
        if let phase = query.phase { parts.append(phase == FleetQuery.failing ? "failed or rolled back" : "phase \(phase)") }
        if let health = query.health { parts.append("health \(health.rawValue)") }
        if let stale = query.stale { parts.append(stale ? "stale" : "not stale") }
        if let text = query.text { parts.append("\"\(text)\"") }
        return parts.joined(separator: ", ")
    }

    /// How often the page refreshes itself: the agents' poll interval, kept within 5 s...60 s (nothing on the page
    /// changes faster than agents report; a slow poll interval must not leave a stale page for minutes).
    static func refreshSeconds(for pollInterval: Duration) -> Int64 {
        min(60, max(5, pollInterval.components.seconds))
    }

    // MARK: Fleet matrix

    private static func row(_ agent: FleetSnapshot.Agent, services: [String], now: Date) -> [String: Any] {
        let record = agent.record
        let cells: [[String: Any]] = services.map { service in
            guard record.services.contains(service) else { return ["service": service, "runs": false] }
            guard let entry = agent.statuses[service] else { return ["service": service, "runs": true, "reported": false] }
            let status = entry.status
            var cell: [String: Any] = [
                "service": service, "runs": true, "reported": true,
                "version": status.version ?? "", "hasVersion": status.version != nil,
                "serial": status.serial.map(String.init) ?? "", "hasSerial": status.serial != nil,
                "phase": status.phase.rawValue, "health": status.health.rawValue,
                "message": status.message, "shortMessage": shorten(status.message, to: 90),
                "processes": status.processes.count, "updatedAgo": relative(entry.updatedAt, to: now),
                "updatedAt": Timestamp.format(entry.updatedAt),
            ]
            if let target = status.targetSerial, target != status.serial { cell["target"] = String(target) }
            return cell
        }
        var row: [String: Any] = [
            "id": record.id, "name": record.name, "path": DetailPageRenderer.pathSegment(record.name), "hostname": record.hostname,
            "stale": agent.isStale,
            "agentVersion": record.agentVersion ?? "", "processManager": record.processManager ?? "",
            "lastSeen": record.lastSeen.map { relative($0, to: now) } ?? "never",
            "lastSeenAt": record.lastSeen.map(Timestamp.format) ?? "no status report yet", "cells": cells,
        ]
        // Keys only when set: the template's sections test presence.
        if let version = record.trustRootVersion { row["trustRootVersion"] = String(version) }
        if agent.identityConflict { row["identityConflict"] = true }
        // Why the agent admits no new release under its trust root ("trust root expired", a root it cannot accept).
        if let problem = record.trustRootProblem {
            row["trustRootProblem"] = problem
            row["shortTrustRootProblem"] = shorten(problem, to: 60)
        }
        return row
    }

    // MARK: Rollouts

    /// Most waves a rollout's card lists: a one-at-a-time rollout has a wave per agent, and its card (on the page as
    /// long as it is the service's latest rollout, refreshed every few seconds) listed all of them.
    static let listedWaves = 12

    /// The waves a card lists: from two before the current one, `listedWaves` of them (fewer at the end).
    static func listedWaveRange(count: Int, current: Int) -> Range<Int> {
        guard count > listedWaves else { return 0..<count }
        let first = min(max(0, current - 2), count - listedWaves)
        return first..<(first + listedWaves)
    }

    static func card(_ view: RolloutView, now: Date) -> [String: Any] {
        let rollout = view.rollout
        let counts = view.counts
        let sizes = rollout.waveSizes
        // The bar's four parts add up to the rollout's agents: `updated` includes the healthy ones.
        let parts: [(kind: String, label: String, count: Int)] = [
            ("healthy", "healthy", counts.healthy), ("updated", "updated, not yet healthy", counts.updated - counts.healthy),
            ("failed", "failed", counts.failed), ("pending", "pending", counts.pending),
        ]
        let segments: [[String: Any]] = parts.filter { $0.count > 0 }.map { part in
            ["kind": part.kind, "label": part.label, "count": part.count, "percent": percent(part.count, of: counts.agents)]
        }
        let groups = view.agentsByWave
        let listed = listedWaveRange(count: sizes.count, current: rollout.state == .completed ? sizes.count - 1 : rollout.currentWave)
        let waves: [[String: Any]] = listed.map { index in
            let members = groups[index]
            // A wave of thousands is shown by its first agents (failed ones first) and counted.
            let shown = (members.filter { $0.standing.progress == .failed } + members.filter { $0.standing.progress != .failed })
                .prefix(listedAgentsPerWave)
            return [
                "number": index + 1, "reached": view.isWaveReached(index),
                "agents": shown.map { agent -> [String: Any] in
                    ["name": agent.name ?? agent.id, "progress": agent.standing.progress.rawValue]
                },
                "hasMore": members.count > shown.count, "more": members.count - shown.count,
            ]
        }
        let failures: [[String: Any]] = view.agents.filter { $0.standing.progress == .failed }.prefix(listedAgentsPerWave).map { agent in
            [
                "agent": agent.name ?? agent.id, "kind": agent.standing.failureKind ?? "failed",
                "reason": agent.standing.failureReason ?? "",
            ]
        }
        return [
            "service": rollout.service, "serial": rollout.serial, "version": rollout.version,
            "stableSerial": rollout.stableSerial.map(String.init) ?? "none", "strategy": rollout.strategy.description,
            "waveStableSeconds": rollout.waveStable.components.seconds, "maxFailures": rollout.maxFailures,
            "state": rollout.state.rawValue, "wave": view.waveNumber,
            "waveCount": sizes.count, "reason": rollout.reason, "hasReason": !rollout.reason.isEmpty,
            "earlierWaves": listed.lowerBound, "hasEarlierWaves": listed.lowerBound > 0,
            "laterWaves": sizes.count - listed.upperBound, "hasLaterWaves": listed.upperBound < sizes.count,
            "agents": counts.agents, "healthy": counts.healthy, "updated": counts.updated, "failed": counts.failed,
            "pending": counts.pending, "segments": segments, "waves": waves, "failures": failures,
            // A halt's reason already names the failed agents and their reasons.
            "showFailures": !failures.isEmpty && rollout.state != .halted, "staged": rollout.strategy != .all,
            "updatedAgo": relative(rollout.updatedAt, to: now), "updatedAt": Timestamp.format(rollout.updatedAt),
        ]
    }

    /// Agents named per wave (and failures listed) on a rollout card.
    static let listedAgentsPerWave = 30

    /// `count` as a percentage of `total` with one decimal, for a CSS width ("33.3").
    static func percent(_ count: Int, of total: Int) -> String {
        guard total > 0 else { return "0" }
        let tenths = (count * 1000 + total / 2) / total
        return "\(tenths / 10).\(tenths % 10)"
    }

    // MARK: Events

    private static func line(_ event: RolloutEvent, names: [String: String], now: Date) -> [String: Any] {
        let at = Timestamp.format(event.at)
        var line: [String: Any] = [
            "id": event.id, "at": at, "time": clockTime(at), "ago": relative(event.at, to: now), "service": event.service,
            "serial": event.serial.map(String.init) ?? "", "hasSerial": event.serial != nil, "kind": event.kind.rawValue,
            "tone": tone(of: event.kind), "message": event.message,
        ]
        if let agentID = event.agentID {
            line["agent"] = names[agentID] ?? agentID
            line["hasAgent"] = true
        }
        return line
    }

    /// The colour family of an event kind: failures stand out, routine steps do not.
    static func tone(of kind: RolloutEventKind) -> String {
        switch kind {
        case .halted, .aborted, .rolledBack, .refused: "bad"
        case .paused: "warn"
        case .completed: "ok"
        case .published, .waveAdvanced, .resumed, .approved: "info"
        case .superseded: "muted"
        }
    }

    // MARK: Text

    /// "1 agent", "3 agents".
    static func counted(_ count: Int, _ noun: String) -> String {
        "\(count) \(noun)\(count == 1 ? "" : "s")"
    }

    /// "12s ago", "5m ago", "3h ago", "2d ago".
    static func relative(_ date: Date, to now: Date) -> String {
        let seconds = max(0, Int(now.timeIntervalSince(date)))
        switch seconds {
        case ..<60: return "\(seconds)s ago"
        case ..<3600: return "\(seconds / 60)m ago"
        case ..<86400: return "\(seconds / 3600)h ago"
        default: return "\(seconds / 86400)d ago"
        }
    }

    /// "03:54:43" out of "2026-11-27T03:54:43Z" (the full timestamp goes in a `title`).
    static func clockTime(_ timestamp: String) -> String {
        guard let t = timestamp.firstIndex(of: "T") else { return timestamp }
        return String(timestamp[timestamp.index(after: t)...].prefix(8))
    }

    /// At most `limit` characters, with an ellipsis when cut.
    static func shorten(_ text: String, to limit: Int) -> String {
        text.count > limit ? String(text.prefix(limit - 1)) + "…" : text
    }
}
