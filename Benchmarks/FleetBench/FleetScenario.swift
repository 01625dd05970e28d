import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import Shared
import Synchronization

/// One simulated agent: its identity and its one connection (agents poll and report on the same kept-alive
/// connection, as `ferry-agent` does).
struct SimulatedAgent: Sendable {
    var index: Int
    var name: String
    var id: String
    var token: String
    var connection: BenchConnection
    /// The ETag of the desired state it has.
    var etag: String

    var desiredStatePath: String { "/v1/agents/\(id)/desired-state" }
    var statusPath: String { "/v1/agents/\(id)/status" }
}

/// What one agent saw over the whole run.
struct AgentOutcome: Sendable {
    enum Wake: Sendable {
        /// Answered `200` after the publish began.
        case woken(at: NIODeadline, body: ByteBuffer)
        /// Its wait ended (`304`) after the publish began, or its connection failed: it never learnt of the release.
        case missed(String)
    }

    var wake: Wake = .missed("never parked")
    /// Long-polls answered before their wait ended while nothing changed, with why.
    var early: [String] = []
    /// Latencies of the periodic reports (steady phase).
    var steadyReports: [Duration] = []
    /// Connections the controller had closed (idle for longer than its idle timeout) and the agent opened again, as a
    /// real agent's libcurl does.
    var reconnects = 0
    /// The last connection it opened again (closed at the end, with the enrolment's connections).
    var reopened: BenchConnection?
    /// Latency of the report sent right after the wake.
    var wakeReport: Duration?
    /// That report's body and when it was sent (the nginx baseline replays it).
    var wakeReportSent: (at: NIODeadline, body: [UInt8])?
    var reportFailures: [String] = []
}

/// The state the agents and the coordinator share.
final class ScenarioState: Sendable {
    private struct Values {
        /// When each agent's current `wait=60` long-poll was sent (`nil`: none outstanding).
        var parkedSince: [NIODeadline?]
        /// Set when the publish command is started.
        var publishStartedAt: NIODeadline?
    }

    private let values: Mutex<Values>

    init(agents: Int) {
        values = Mutex(Values(parkedSince: Array(repeating: nil, count: agents)))
    }

    func parked(_ index: Int, at instant: NIODeadline?) {
        values.withLock { $0.parkedSince[index] = instant }
    }

    /// How many agents have a long-poll outstanding, and when the oldest was sent.
    var parkedSummary: (count: Int, oldest: NIODeadline?) {
        values.withLock { values in
            let parked = values.parkedSince.compactMap { $0 }
            return (parked.count, parked.min())
        }
    }

    var publishStartedAt: NIODeadline? {
        get { values.withLock { $0.publishStartedAt } }
        set { values.withLock { $0.publishStartedAt = newValue } }
    }
}

/// The run: enroll, (optionally) report steadily, park every agent's long-poll, publish, watch the wake-up.
struct FleetScenario: Sendable {
    struct Parameters: Sendable {
        var agents: Int
        /// `?wait=` of the parked long-polls.
        var waitSeconds: Int
        /// How long the steady phase (report every `reportSeconds`, long-poll in between) lasts; 0 skips it.
        var steadySeconds: Int
        var reportSeconds: Int
        var enrollConcurrency: Int
    }

    let parameters: Parameters
    let controller: BenchController
    let group: any EventLoopGroup
    let tls: NIOSSLContext?

    // MARK: Enrolment

    /// Enrolls every agent over its own connection and fetches its first desired state.
    func enrollAll(progress: @escaping @Sendable (Int) -> Void) async throws -> [SimulatedAgent] {
        var agents: [SimulatedAgent?] = Array(repeating: nil, count: parameters.agents)
        try await withThrowingTaskGroup(of: SimulatedAgent.self) { group in
            var next = 0
            var done = 0
            while next < min(parameters.enrollConcurrency, parameters.agents) {
                let index = next
                group.addTask { try await enroll(index) }
                next += 1
            }
            while let agent = try await group.next() {
                agents[agent.index] = agent
                done += 1
                if done % 500 == 0 { progress(done) }
                if next < parameters.agents {
                    let index = next
                    group.addTask { try await enroll(index) }
                    next += 1
                }
            }
        }
        return agents.compactMap { $0 }
    }

    private func enroll(_ index: Int) async throws -> SimulatedAgent {
        let connection = try await BenchConnection.connect(host: "127.0.0.1", port: controller.port, tls: tls, group: group)
        let name = "bench-" + String(index + 100_000).dropFirst()
        let request = EnrollRequest(name: name, hostname: name, services: ["api"])
        let enrolled = try await connection.exchange(.POST, "/v1/agents", token: controller.enrollToken, body: Array(request.json.encoded()))
        guard enrolled.status == 201 else {
            throw BenchError("enrolling \(name) answered \(enrolled.status): \(String(buffer: enrolled.body))")
        }
        let response = try EnrollResponse(json: JSONValue.parse(Array(buffer: enrolled.body)))
        var agent = SimulatedAgent(index: index, name: name, id: response.agentID, token: response.token, connection: connection, etag: "")
        let first = try await connection.exchange(.GET, agent.desiredStatePath, token: agent.token)
        guard first.status == 200, let etag = first.etag else {
            throw BenchError(
                "the first desired state of \(name) answered \(first.status) (ETag \(first.etag ?? "none")): \(String(buffer: first.body).prefix(300))"
            )
        }
        agent.etag = etag
        return agent
    }

    // MARK: One agent's run

    /// Steady reporting until `steadyUntil`, then one long-poll of `waitSeconds` parked until the publish wakes it
    /// (re-parked if its wait ends before the publish starts), then one report.
    func run(_ agent: SimulatedAgent, steadyUntil: ContinuousClock.Instant, state: ScenarioState, newSerial: Int64) async -> AgentOutcome {
        var outcome = AgentOutcome()
        var agent = agent
        do {
            if parameters.steadySeconds > 0 {
                // Spread the first reports over one interval, as a fleet that started at different times.
                try await Task.sleep(for: .milliseconds(Int.random(in: 0..<(parameters.reportSeconds * 1000))))
                while ContinuousClock.now < steadyUntil {
                    try await reconnectIfClosed(&agent, &outcome)
                    let report = try await send(Array(report(for: agent, serial: newSerial - 1).json.encoded()), from: agent)
                    if report.status == 204 {
                        outcome.steadyReports.append(report.latency)
                    } else {
                        outcome.reportFailures.append("\(report.status): \(String(buffer: report.body).prefix(200))")
                    }
                    let poll = try await longPoll(agent, wait: parameters.reportSeconds)
                    if poll.status != 304 || poll.latency < .seconds(parameters.reportSeconds) - .milliseconds(500) {
                        outcome.early.append("steady long-poll answered \(poll.status) after \(poll.latency)")
                        if let etag = poll.etag { agent.etag = etag }
                    }
                }
            }
            while true {
                try await reconnectIfClosed(&agent, &outcome)
                let sentAt = NIODeadline.now()
                state.parked(agent.index, at: sentAt)
                let poll = try await longPoll(agent, wait: parameters.waitSeconds)
                state.parked(agent.index, at: nil)
                let publishStarted = state.publishStartedAt
                let beforePublish = publishStarted.map { poll.answeredAt < $0 } ?? true
                if beforePublish {
                    // Nothing changed yet: only the end of the wait may answer.
                    if poll.status != 304 || poll.latency < .seconds(parameters.waitSeconds) - .milliseconds(500) {
                        outcome.early.append("parked long-poll answered \(poll.status) after \(poll.latency) before the publish")
                        if let etag = poll.etag, poll.status == 200 { agent.etag = etag }
                    }
                    continue
                }
                // Its wait ended as the publish began (a 304 after the whole wait): not a miss, it polls again and the
                // next answer must carry the new release.
                if poll.status == 304, poll.latency >= .seconds(parameters.waitSeconds) - .milliseconds(500) { continue }
                guard poll.status == 200, let etag = poll.etag, etag != agent.etag else {
                    outcome.wake = .missed("answered \(poll.status) after \(poll.latency) without the new release")
                    return outcome
                }
                outcome.wake = .woken(at: poll.answeredAt, body: poll.body)
                agent.etag = etag
                break
            }
            let body = Array(report(for: agent, serial: newSerial).json.encoded())
            let report = try await send(body, from: agent)
            outcome.wakeReportSent = (report.sentAt, body)
            if report.status == 204 {
                outcome.wakeReport = report.latency
            } else {
                outcome.reportFailures.append("\(report.status): \(String(buffer: report.body).prefix(200))")
            }
        } catch {
            if case .missed = outcome.wake { outcome.wake = .missed("\(error)") }
            outcome.reportFailures.append("\(error)")
        }
        return outcome
    }

    /// Opens the agent's connection again when the controller closed it. Enrolling 10,000 agents on a loaded machine
    /// can take longer than the controller's idle timeout (75 s), and the first agents' connections idle until the last
    /// one enrolls: without this they failed and never parked.
    private func reconnectIfClosed(_ agent: inout SimulatedAgent, _ outcome: inout AgentOutcome) async throws {
        guard !agent.connection.channel.isActive else { return }
        await agent.connection.close()
        agent.connection = try await BenchConnection.connect(host: "127.0.0.1", port: controller.port, tls: tls, group: group)
        outcome.reconnects += 1
        outcome.reopened = agent.connection
    }

    private func longPoll(_ agent: SimulatedAgent, wait: Int) async throws -> BenchResponse {
        try await agent.connection.exchange(
            .GET,
            agent.desiredStatePath + "?wait=\(wait)",
            token: agent.token,
            headers: [("If-None-Match", agent.etag)]
        )
    }

    private func send(_ body: [UInt8], from agent: SimulatedAgent) async throws -> BenchResponse {
        try await agent.connection.exchange(.POST, agent.statusPath, token: agent.token, body: body)
    }

    /// What an agent running `serial` healthy reports (two processes, like a small cluster-mode app).
    private func report(for agent: SimulatedAgent, serial: Int64) -> StatusReport {
        let processes = (0..<2).map { index in
            ProcessReport(
                name: "api",
                pmId: Int64(index),
                status: "online",
                restarts: 0,
                uptimeSeconds: 3600,
                memoryBytes: 48_000_000,
                cpuPercent: 0.5
            )
        }
        let status = ServiceStatus(
            service: "api",
            serial: serial,
            version: "1.0.\(serial)",
            targetSerial: serial,
            phase: .running,
            message: "running serial \(serial)",
            health: .healthy,
            processes: processes
        )
        return StatusReport(agentVersion: "fleet-bench", hostname: agent.name, processManager: "builtin", services: [status])
    }

    // MARK: Checks

    /// Whether a woken agent's body is a desired state for it that carries serial `serial` of `api`.
    static func check(_ body: ByteBuffer, agent: SimulatedAgent, serial: Int64) -> String? {
        do {
            let state = try DesiredState(json: JSONValue.parse(Array(buffer: body)))
            guard state.agentID == agent.id else { return "the desired state names agent \(state.agentID)" }
            guard let envelope = state.releases.first else { return "the desired state has no release" }
            let release = try Release.decode(envelope.payload)
            guard release.service == "api", release.serial == serial else {
                return "the desired state gives \(release.service) serial \(release.serial), not api serial \(serial)"
            }
            return nil
        } catch {
            return "the desired state does not parse: \(error)"
        }
    }
}
