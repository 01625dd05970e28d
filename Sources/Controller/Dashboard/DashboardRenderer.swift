import Foundation
import Mustache
import Shared

/// Renders a `FleetSnapshot` as the dashboard's HTML.
struct DashboardRenderer: Sendable {
    private let template: MustacheTemplate

    /// - Throws: only if the embedded template were malformed (a programming error caught by the tests).
    init() throws {
        template = try MustacheTemplate(string: DashboardTemplate.page)
    }

    func render(_ fleet: FleetSnapshot) -> String {
        let serviceNames = fleet.services.map(\.name)
        let services: [[String: Any]] = fleet.services.map { summary in
            [
                "name": summary.name, "version": summary.latestVersion ?? "—", "serial": summary.latestSerial.map(String.init) ?? "—",
                "releases": summary.releaseCount, "agents": summary.agentCount,
            ]
        }
        let agents: [[String: Any]] = fleet.agents.map { agent in
            let record = agent.record
            let cells: [[String: Any]] = serviceNames.map { service in
                guard record.services.contains(service) else { return ["runs": false] }
                guard let entry = agent.statuses[service] else { return ["runs": true, "reported": false] }
                let status = entry.status
                var cell: [String: Any] = [
                    "runs": true, "reported": true, "version": status.version ?? "none", "serial": status.serial.map(String.init) ?? "—",
                    "phase": status.phase.rawValue, "health": status.health.rawValue, "message": status.message,
                    "shortMessage": status.message.count > 80 ? String(status.message.prefix(79)) + "…" : status.message,
                ]
                if let target = status.targetSerial, target != status.serial { cell["target"] = String(target) }
                return cell
            }
            let lastSeen = record.lastSeen
            return [
                "id": record.id, "name": record.name, "hostname": record.hostname, "stale": agent.isStale,
                "agentVersion": record.agentVersion ?? "", "processManager": record.processManager ?? "",
                "lastSeen": lastSeen.map { Self.relative($0, to: fleet.generatedAt) } ?? "never",
                "lastSeenAt": lastSeen.map(Timestamp.format) ?? "", "cells": cells,
            ]
        }
        let context: [String: Any] = [
            "refreshSeconds": max(5, fleet.pollInterval.components.seconds),
            "generatedAt": Timestamp.format(fleet.generatedAt),
            "agentCount": fleet.agents.count, "staleCount": fleet.agents.filter(\.isStale).count,
            "serviceCount": fleet.services.count, "hasServices": !fleet.services.isEmpty, "hasAgents": !fleet.agents.isEmpty,
            "services": services, "serviceNames": serviceNames, "agents": agents,
        ]
        return template.render(context)
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
}
