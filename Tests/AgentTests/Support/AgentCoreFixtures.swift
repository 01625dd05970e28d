import Foundation
import Shared
import Testing

@testable import Agent

/// Releases, applied-release records and process-table rows for the agent-core unit tests (planner, evaluator,
/// report, state). Dates are whole seconds so a release survives the payload round trip unchanged.
enum CoreFixture {
    /// 2027-01-15T08:00:00Z: the "now" of these tests.
    static let now = Date(timeIntervalSince1970: 1_800_000_000)
    static let digest = SHA256.hash(Array("artifact".utf8))

    /// A release of `service` with one app per name in `apps` (script `<name>.js`).
    static func release(
        _ service: String = "api",
        serial: Int64,
        apps: [String]? = nil,
        env: [String: String] = [:],
        appOptions: [String: JSONValue] = [:],
        expiresIn: TimeInterval = 86_400,
        health: HealthCheck = HealthCheck()
    ) -> Release {
        let names = apps ?? [service]
        return Release(
            service: service,
            serial: serial,
            version: "1.0.\(serial)",
            createdAt: now.addingTimeInterval(-7 * 86_400),
            expiresAt: now.addingTimeInterval(expiresIn),
            artifact: ArtifactReference(url: ArtifactReference.controllerPath(for: digest), sha256: digest, size: 1024),
            env: env,
            pm2: PM2Config(apps: names.map { PM2App(name: $0, script: "\($0).js", options: appOptions) }),
            health: health
        )
    }

    /// The record the agent keeps for an applied (or pending) release.
    static func applied(_ release: Release, envDigest: String = emptyDigest) -> AppliedRelease {
        AppliedRelease(
            serial: release.serial,
            version: release.version,
            sha256: release.artifact.sha256.hex,
            directoryName: AgentLayout.releaseDirectoryName(serial: release.serial, sha256: release.artifact.sha256),
            payload: release.payload(),
            envDigest: envDigest
        )
    }

    /// Digest of an absent (empty) instance env file.
    static let emptyDigest = SHA256.hash([UInt8]()).hex

    /// The apps of `release` as `AppSpec.specs` derives them for the agent's layout (one CPU).
    static func specs(_ release: Release, instanceEnv: [String: String] = [:]) -> [AppSpec] {
        AppSpec.specs(for: release, currentLink: currentLink(release.service), instanceEnv: instanceEnv, cpuCount: 1)
    }

    static func currentLink(_ service: String) -> String { "/var/lib/ferry/services/\(service)/current" }

    /// One row of the process table for `app`, matching it unless told otherwise.
    static func process(
        _ app: AppSpec,
        pmId: Int = 0,
        status: ProcessStatus = .online,
        restarts: Int = 0,
        script: String? = nil
    ) -> ManagedProcess {
        ManagedProcess(
            name: app.name,
            namespace: "ferry",
            pmId: pmId,
            pid: status == .online ? Int32(4000 + pmId) : nil,
            status: status,
            restarts: restarts,
            uptimeSeconds: status == .online ? 60 : nil,
            memoryBytes: 50 << 20,
            cpuPercent: 1.5,
            execMode: app.execMode,
            instances: app.instances,
            instanceIndex: 0,
            scriptPath: script ?? app.script,
            cwd: app.cwd,
            interpreter: app.interpreter ?? "none"
        )
    }

    /// A row for an app no applied release names.
    static func stray(_ name: String, pmId: Int) -> ManagedProcess {
        ManagedProcess(
            name: name,
            namespace: "ferry",
            pmId: pmId,
            pid: Int32(5000 + pmId),
            status: .online,
            restarts: 0,
            uptimeSeconds: 5,
            memoryBytes: 0,
            cpuPercent: 0,
            execMode: .fork,
            instances: 1,
            instanceIndex: 0,
            scriptPath: "/srv/\(name)/index.js",
            cwd: "/srv/\(name)",
            interpreter: "node"
        )
    }
}

extension ServiceState {
    /// This state as `state.json` would hold it with another message and `failures` recorded on top, newest last in
    /// the list given (text the agent did not write itself, for tests of what leaves the agent).
    func restored(message: String? = nil, recording newFailures: [Failure] = []) -> ServiceState {
        var recorded = failures
        for failure in newFailures { recorded.record(serial: failure.serial, reason: failure.reason, kind: failure.kind) }
        return ServiceState(
            highestAcceptedSerial: highestAcceptedSerial,
            applied: applied,
            previous: previous,
            pending: pending,
            failures: recorded,
            phase: phase,
            message: message ?? self.message
        )
    }
}
