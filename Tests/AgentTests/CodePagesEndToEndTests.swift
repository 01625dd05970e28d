import Foundation
import Shared
import Synchronization
import TestSupport
import Testing

/// A real `ferry-agent run` lets go of the code its start-up and install ran once its pass settles (`LoadedCode`,
/// docs/agent.md): its file-backed RSS falls below what start-up reached, and the agent goes on serving. With
/// `FERRY_CODE_PAGES=keep` nothing is let go; an unknown value is warned about and the default holds.
@Suite("Agent code pages end to end", .serialized)
struct CodePagesEndToEndTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var value: String?
        var releases: Bool
        var warns: Bool
        /// Whether the process logs debug lines (where the release is said). At `info`, as deployed, the release is
        /// seen in the RSS alone: a release that ran only when its line was logged (it once sat in the log call's
        /// metadata, an autoclosure) fails that case.
        var debug = true
        var testDescription: String { "FERRY_CODE_PAGES=\(value ?? "(unset)")\(debug ? "" : ", log level info")" }
    }

    static let cases = [
        Case(value: nil, releases: true, warns: false),
        Case(value: nil, releases: true, warns: false, debug: false),
        Case(value: "keep", releases: false, warns: false),
        Case(value: "off", releases: true, warns: true),
    ]

    @Test("an agent lets go of its start-up code once its pass settles", .timeLimit(.minutes(3)), arguments: cases)
    func settledAgentLetsGo(setting: Case) async throws {
        try await FleetFixture.with { fleet in
            try await fleet.startController()
            let port = try freeLoopbackPort()
            _ = try await fleet.publish(serial: 1, version: "1.0.0", port: port)
            let config = try await fleet.enrollAgent(name: "pages-1", backend: .builtin)
            var environment: [String: String] = [:]
            if let value = setting.value { environment["FERRY_CODE_PAGES"] = value }
            if !setting.debug { environment["FERRY_LOG_LEVEL"] = "info" }
            let agent = try fleet.startAgent(config: config, label: "agent", environment: environment)

            // The highest file-backed RSS seen while the agent starts and installs, sampled as it goes.
            let peak = PeakSampler()
            let pid = agent.pid
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    while !Task.isCancelled {
                        if let kb = Self.residentFileKB(of: pid) { peak.note(kb) }
                        try await Task.sleep(for: .milliseconds(50))
                    }
                }
                try await fleet.waitUntilRunning("1.0.0", port: port, agent: "pages-1")
                group.cancelAll()
            }
            let logged = { agent.stdout + agent.stderr }
            try await Self.expectOutcome(setting, of: "the agent", pid: agent.pid, before: peak.highest, timeout: .seconds(60), logged: logged)
            // Still serving, still answering the controller.
            #expect(await fleet.appAnswer(port: port)?.hasPrefix("1.0.0") == true)
            #expect(agent.isRunning)
        }
    }

    /// A real `ferry-controller serve` lets go of what its start-up ran (`CodePageService`; brought forward from 30 s by
    /// the test hook) and goes on answering; with `keep` it says so and lets nothing go.
    @Test("a controller lets go of its start-up code", .timeLimit(.minutes(2)), arguments: cases)
    func controllerLetsGo(setting: Case) async throws {
        try await FleetFixture.with { fleet in
            fleet.controller.environment["FERRY_TEST_CODE_PAGES_FIRST_MS"] = "1500"
            if let value = setting.value { fleet.controller.environment["FERRY_CODE_PAGES"] = value }
            try await fleet.startController(extraArguments: setting.debug ? ["--log-level", "debug"] : [])
            let process = try #require(fleet.controller.process)
            let started = try #require(Self.residentFileKB(of: process.pid))
            let logged = { process.stdout + process.stderr }
            try await Self.expectOutcome(setting, of: "the controller", pid: process.pid, before: started, timeout: .seconds(30), logged: logged)
            // Still answering, the code it let go included: a publish runs the signing checks and the store again.
            let port = try freeLoopbackPort()
            _ = try await fleet.publish(serial: 1, version: "1.0.0", port: port)
            #expect(process.isRunning)
        }
    }

    /// Waits for what `setting` makes the process `who` log at the moment it would let go, and checks it: with a release,
    /// no `madvise` failed and `RssFile` of `pid` is now over 2 MB below `before` (kB); with `keep`, that it kept them and
    /// let nothing go. An unknown value is warned about, and only then.
    static func expectOutcome(
        _ setting: Case,
        of who: String,
        pid: Int32,
        before: Int,
        timeout: Duration,
        logged: () -> String
    ) async throws {
        if setting.releases && !setting.debug {
            // Nothing is said at `info`: the RSS shows it.
            let now = try await eventually("\(who) lets go of its code pages (RSS)", timeout: timeout) { () -> Int? in
                residentFileKB(of: pid).flatMap { $0 + 2048 < before ? $0 : nil }
            }
            #expect(!logged().contains("released code pages"))
            #expect(now + 2048 < before)
        } else if setting.releases {
            let line = try await eventually("\(who) lets go of its code pages", timeout: timeout) {
                logged().split(separator: "\n").first { $0.contains("released code pages") }.map(String.init)
            }
            #expect(line.contains("ferry.failures=0"), "\(line)")
            // Read until it shows: between the line and a single read, the next poll or report can page code back in.
            let now = try await eventually("\(who)'s file-backed RSS drops below \(before - 2048) kB after letting go", timeout: timeout) {
                () -> Int? in
                residentFileKB(of: pid).flatMap { $0 + 2048 < before ? $0 : nil }
            }
            #expect(now + 2048 < before, "file-backed RSS of \(who) \(now) kB after letting go, \(before) kB before")
        } else {
            // The moment the default would let go: it says it kept them instead.
            _ = try await eventually("\(who) keeps its code pages", timeout: timeout) {
                logged().contains("code pages kept (FERRY_CODE_PAGES=keep)") ? true : nil
            }
            #expect(!logged().contains("released code pages"))
        }
        #expect(logged().contains("FERRY_CODE_PAGES=off is not") == setting.warns)
    }

    /// `RssFile` of `pid` in kB, or `nil` when it cannot be read.
    static func residentFileKB(of pid: Int32) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("RssFile:") })
        else { return nil }
        return line.dropFirst("RssFile:".count).split(whereSeparator: { $0 == " " || $0 == "\t" }).first.flatMap { Int($0) }
    }

    private final class PeakSampler: Sendable {
        private let value = Mutex(0)
        func note(_ kb: Int) { value.withLock { $0 = max($0, kb) } }
        var highest: Int { value.withLock { $0 } }
    }
}
