import Shared
import Testing

@testable import Agent

/// Crash loops behind an `online` table (`RestartWatch`): looks at the table's restart counters over time, and the
/// loops each look finds.
@Suite("Restart watch")
struct RestartWatchTests {
    /// One step: a look at `at` seconds with each instance's counter (`app/pmId: restarts`), and the loops expected
    /// (`app/pmId: restarts in seconds`); or starting apps over.
    enum Step: Sendable, CustomTestStringConvertible {
        case look(at: Int64, [String: Int], loops: [String])
        case forget([String])

        var testDescription: String {
            switch self {
            case .look(let at, let counters, let loops): "look at \(at) s \(counters.sorted { $0.key < $1.key }) → \(loops)"
            case .forget(let apps): "forget \(apps)"
            }
        }
    }

    static let scenarios: [(String, [Step])] = [
        (
            "three restarts within the window make a loop, counted from the first look",
            [
                .look(at: 0, ["api/0": 0], loops: []),
                .look(at: 30, ["api/0": 1], loops: []),
                .look(at: 60, ["api/0": 2], loops: []),
                .look(at: 90, ["api/0": 3], loops: ["api/0: 3 in 90"]),
                .look(at: 120, ["api/0": 5], loops: ["api/0: 5 in 120"]),
            ]
        ),
        (
            "PM2's endless loop: hundreds of restarts between two looks",
            [.look(at: 0, ["api/0": 2], loops: []), .look(at: 30, ["api/0": 302], loops: ["api/0: 300 in 30"])]
        ),
        (
            "restarts spread wider than the window are no loop",
            [
                .look(at: 0, ["api/0": 0], loops: []),
                .look(at: 400, ["api/0": 1], loops: []),
                .look(at: 800, ["api/0": 2], loops: []),
                .look(at: 1200, ["api/0": 3], loops: []),
            ]
        ),
        (
            "the loop ends once the counter has not moved for the window",
            [
                .look(at: 0, ["api/0": 0], loops: []),
                .look(at: 10, ["api/0": 4], loops: ["api/0: 4 in 10"]),
                .look(at: 300, ["api/0": 4], loops: ["api/0: 4 in 300"]),
                .look(at: 590, ["api/0": 4], loops: ["api/0: 4 in 590"]),
                // The look before the restarts is now out of the window.
                .look(at: 605, ["api/0": 4], loops: []),
            ]
        ),
        (
            "a counter that went down was reset: the looks before it do not count",
            [
                .look(at: 0, ["api/0": 7], loops: []),
                .look(at: 10, ["api/0": 0], loops: []),
                .look(at: 20, ["api/0": 2], loops: []),
                .look(at: 30, ["api/0": 3], loops: ["api/0: 3 in 20"]),
            ]
        ),
        (
            "an install or an env reload starts the app over (forget)",
            [
                .look(at: 0, ["api/0": 0], loops: []),
                .look(at: 10, ["api/0": 2], loops: []),
                .forget(["api"]),
                .look(at: 20, ["api/0": 3], loops: []),
                .look(at: 30, ["api/0": 4], loops: []),
            ]
        ),
        (
            "forgetting one app leaves the others' counts",
            [
                .look(at: 0, ["api/0": 0, "worker/1": 0], loops: []),
                .forget(["api"]),
                .look(at: 10, ["api/0": 3, "worker/1": 3], loops: ["worker/1: 3 in 10"]),
            ]
        ),
        (
            "instances are counted apart; the app's loop names its worst instance",
            [
                .look(at: 0, ["api/0": 0, "api/1": 0], loops: []),
                .look(at: 10, ["api/0": 2, "api/1": 2], loops: []),
                .look(at: 20, ["api/0": 3, "api/1": 9], loops: ["api/1: 9 in 20"]),
            ]
        ),
        (
            "an instance that left the table starts over when it comes back",
            [
                .look(at: 0, ["api/0": 0], loops: []),
                .look(at: 10, [:], loops: []),
                .look(at: 20, ["api/0": 5], loops: []),
                .look(at: 30, ["api/0": 6], loops: []),
            ]
        ),
        (
            "a counter gone wrong (negative, then the largest integer) counts from 0 and does not overflow",
            [
                .look(at: 0, ["api/0": Int.min], loops: []),
                .look(at: 10, ["api/0": Int.max], loops: ["api/0: \(Int.max) in 10"]),
                .look(at: 20, ["api/0": -1], loops: []),
            ]
        ),
        ("apps not asked about are not watched", [.look(at: 0, ["other/3": 0], loops: []), .look(at: 10, ["other/3": 50], loops: [])]),
    ]

    @Test("scenarios", arguments: scenarios)
    func scenario(_ name: String, _ steps: [Step]) {
        var watch = RestartWatch()
        let origin = ContinuousClock.now
        for step in steps {
            switch step {
            case .look(let at, let counters, let expected):
                let table = counters.map { key, restarts in
                    let parts = key.split(separator: "/")
                    return Self.process(String(parts[0]), pmId: Int(parts[1]) ?? 0, restarts: restarts)
                }
                let loops = watch.observe(table, apps: ["api", "worker"], now: origin.advanced(by: .seconds(at)))
                let found = loops.map { "\($0.app)/\($0.pmId): \($0.restarts) in \($0.over.components.seconds)" }
                #expect(found == expected, "\(name): \(step.testDescription)")
            case .forget(let apps):
                watch.forget(apps)
            }
        }
    }

    @Test("the sentence names the app, the instance, the count and the time")
    func sentence() {
        let loop = RestartWatch.Loop(app: "api", pmId: 2, restarts: 14, over: .seconds(190))
        #expect(
            loop.description
                == "api (pm_id 2) restarted 14 times in 3 min while the process table showed it running: a crash loop the process manager keeps restarting"
        )
        #expect(RestartWatch.Loop.words(.seconds(45)) == "45 s")
        #expect(RestartWatch.Loop.words(.seconds(119)) == "119 s")
    }

    static func process(_ name: String, pmId: Int, restarts: Int) -> ManagedProcess {
        ManagedProcess(
            name: name,
            namespace: "ferry",
            pmId: pmId,
            pid: Int32(4000 + pmId),
            status: .online,
            restarts: restarts,
            uptimeSeconds: 5,
            memoryBytes: 50 << 20,
            cpuPercent: 1,
            execMode: .fork,
            instances: 1,
            instanceIndex: 0,
            scriptPath: "/srv/\(name).js",
            cwd: "/srv",
            interpreter: "node"
        )
    }
}
