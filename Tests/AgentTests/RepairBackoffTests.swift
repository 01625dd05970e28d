import Testing

@testable import Agent

/// How soon an app may be restarted again (`RepairBackoff`): the waits after each restart in a row, when a repair may
/// run, and what makes an app start over.
@Suite("Repair backoff")
struct RepairBackoffTests {
    @Test(
        "the wait after n restarts in a row: 10 s, doubled each time, at most 5 minutes",
        arguments: [(0, 10), (1, 10), (2, 20), (3, 40), (4, 80), (5, 160), (6, 300), (7, 300), (64, 300), (Int.max, 300)] as [(Int, Int64)]
    )
    func delays(repairs: Int, seconds: Int64) {
        #expect(RepairBackoff().delay(afterRepairs: repairs) == .seconds(seconds))
    }

    /// A floor (a refused serial's 30 minutes) lengthens the wait it is over, and only that one: the count in a row goes
    /// on, and a floor under the policy's wait changes nothing.
    @Test func aFloorLengthensTheNextWaitOnly() {
        // The install backoff's policy: a record is kept an hour, past the floor.
        var backoff = RepairBackoff(policy: .init(first: .seconds(10), maximum: .seconds(300), forgetAfter: .seconds(3600)))
        let start = ContinuousClock.now
        #expect(backoff.recordRepair(app: "web#2", now: start) == (1, .seconds(10)))
        #expect(backoff.recordRepair(app: "web#2", now: start + .seconds(10), atLeast: .seconds(1800)) == (2, .seconds(1800)))
        #expect(backoff.remainingWait(app: "web#2", now: start + .seconds(40)) == .seconds(1770))
        #expect(backoff.recordRepair(app: "web#2", now: start + .seconds(1810), atLeast: .seconds(5)) == (3, .seconds(40)))
    }

    @Test("a policy that starts at zero stays at zero and still returns, however many repairs")
    func zeroFirstDelay() {
        let backoff = RepairBackoff(policy: .init(first: .zero))
        #expect(backoff.delay(afterRepairs: .max) == .zero)
    }

    /// One step of a scenario: at `at` seconds, a check (the wait expected, nil: may run now) or a restart, or starting
    /// apps over.
    enum Step: Sendable, CustomTestStringConvertible {
        case check(String, at: Int64, wait: Int64?)
        case repair(String, at: Int64, inARow: Int, nextWait: Int64)
        case forget([String])

        var testDescription: String {
            switch self {
            case .check(let app, let at, let wait): "check \(app) at \(at) s: \(wait.map { "wait \($0) s" } ?? "may run")"
            case .repair(let app, let at, let inARow, _): "restart \(app) at \(at) s (\(inARow) in a row)"
            case .forget(let apps): "forget \(apps)"
            }
        }
    }

    static let scenarios: [(String, [Step])] = [
        ("an app never restarted may be at once", [.check("api", at: 0, wait: nil)]),
        (
            "a crash loop: each restart waits twice as long as the one before",
            [
                .repair("api", at: 0, inARow: 1, nextWait: 10),
                .check("api", at: 1, wait: 9),
                .check("api", at: 9, wait: 1),
                .check("api", at: 10, wait: nil),
                .repair("api", at: 12, inARow: 2, nextWait: 20),
                .check("api", at: 31, wait: 1),
                .check("api", at: 32, wait: nil),
                .repair("api", at: 32, inARow: 3, nextWait: 40),
                .check("api", at: 71, wait: 1),
            ]
        ),
        (
            "apps are counted apart",
            [.repair("api", at: 0, inARow: 1, nextWait: 10), .check("worker", at: 1, wait: nil), .repair("worker", at: 1, inARow: 1, nextWait: 10)]
        ),
        (
            "an app not restarted for 10 minutes starts over",
            [
                .repair("api", at: 0, inARow: 1, nextWait: 10),
                .repair("api", at: 10, inARow: 2, nextWait: 20),
                .repair("api", at: 30, inARow: 3, nextWait: 40),
                .check("api", at: 629, wait: nil),
                .repair("api", at: 630, inARow: 1, nextWait: 10),
            ]
        ),
        (
            "at most five minutes, however long the loop",
            (0..<12).map { index in
                let at = Int64([0, 10, 30, 70, 150, 310, 610, 910, 1210, 1510, 1810, 2110][index])
                return .repair("api", at: at, inARow: index + 1, nextWait: [10, 20, 40, 80, 160][safe: index] ?? 300)
            } + [.check("api", at: 2409, wait: 1)]
        ),
        (
            "an install or an env change starts the apps over",
            [
                .repair("api", at: 0, inARow: 1, nextWait: 10),
                .repair("worker", at: 0, inARow: 1, nextWait: 10),
                .forget(["api"]),
                .check("api", at: 1, wait: nil),
                .check("worker", at: 1, wait: 9),
                .repair("api", at: 1, inARow: 1, nextWait: 10),
            ]
        ),
    ]

    @Test("scenarios", arguments: scenarios)
    func scenario(_ name: String, _ steps: [Step]) {
        var backoff = RepairBackoff()
        let start = ContinuousClock.now
        for step in steps {
            switch step {
            case .check(let app, let at, let wait):
                #expect(
                    backoff.remainingWait(app: app, now: start.advanced(by: .seconds(at))) == wait.map { .seconds($0) },
                    "\(step.testDescription)"
                )
            case .repair(let app, let at, let inARow, let nextWait):
                let result = backoff.recordRepair(app: app, now: start.advanced(by: .seconds(at)))
                #expect(result.inARow == inARow && result.nextWait == .seconds(nextWait), "\(step.testDescription): \(result)")
            case .forget(let apps):
                backoff.forget(apps)
            }
        }
    }

    /// The install backoff's waits are spread (`Policy.jitter`): a fleet whose downloads of one release all failed at
    /// once does not come back to the store in the same second every time. Each wait is within the spread, the one
    /// recorded is the one returned, and 200 agents' first waits are not all the same.
    @Test func aJitteredWaitIsSpreadAndKept() {
        var backoff = RepairBackoff(policy: .init(first: .seconds(10), maximum: .seconds(300), jitter: 0.25))
        let start = ContinuousClock.now
        var firstWaits: Set<Duration> = []
        for agent in 0..<200 {
            let (inARow, wait) = backoff.recordRepair(app: "agent-\(agent)", now: start)
            #expect(inARow == 1)
            #expect(wait >= .seconds(10) && wait < .milliseconds(12_500), "\(wait)")
            #expect(backoff.remainingWait(app: "agent-\(agent)", now: start) == wait, "the wait kept is the one said")
            #expect(backoff.remainingWait(app: "agent-\(agent)", now: start.advanced(by: wait)) == nil)
            firstWaits.insert(wait)
        }
        #expect(firstWaits.count > 100, "spread: \(firstWaits.count) distinct waits of 200")
        // The spread is on top of the doubling, up to the maximum's quarter.
        for repairs in 2...12 {
            let (_, wait) = backoff.recordRepair(app: "agent-0", now: start)
            let base = backoff.delay(afterRepairs: repairs)
            #expect(wait >= base && wait < base * 1.25, "\(repairs) in a row: \(wait) against \(base)")
        }
    }
}

extension Array {
    fileprivate subscript(safe index: Int) -> Element? { indices.contains(index) ? self[index] : nil }
}
