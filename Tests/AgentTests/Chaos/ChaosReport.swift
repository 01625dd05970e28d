import Foundation

/// What the chaos loop saw: one line per cycle as it goes, then cycles, faults by kind, violations and convergence
/// percentiles, and the faults × outcomes table for docs/reliability.md.
struct ChaosReport {
    /// How a cycle ended for one agent.
    enum Outcome: String, Sendable {
        /// It runs the cycle's release.
        case newRelease = "new release"
        /// It runs its last good release and reports the cycle's release as failed (rolled back).
        case rolledBack = "rolled back"
        /// It did not settle within the bound (a violation).
        case notConverged = "not converged"
    }

    struct Cycle {
        var number: Int
        var serial: Int64
        var kind: ChaosReleaseKind
        var fault: ChaosFault
        var target: String
        var faultAfter: Duration
        var outcomes: [String: Outcome]
        var convergence: [String: Duration]
        var violations: [String]
    }

    let seed: UInt64
    let backends: [Backend]
    let bound: Duration
    var unavailable: [ChaosFault: String] = [:]
    private(set) var cycles: [Cycle] = []
    private(set) var summary = ""
    private let started = ContinuousClock.now

    init(seed: UInt64, backends: [Backend], bound: Duration) {
        self.seed = seed
        self.backends = backends
        self.bound = bound
    }

    var violations: [String] { cycles.flatMap(\.violations) }

    /// Prints a line to the test's output, unbuffered: a long run shows its progress.
    func print(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }

    mutating func record(_ cycle: Cycle) {
        cycles.append(cycle)
        let outcomes = cycle.outcomes.sorted { $0.key < $1.key }.map { name, outcome in
            "\(name) \(outcome.rawValue) in \(Self.seconds(cycle.convergence[name] ?? .zero))"
        }
        print(
            "cycle \(cycle.number): serial \(cycle.serial) \(cycle.kind.rawValue), \(cycle.fault.rawValue) on \(cycle.target) "
                + "after \(Self.seconds(cycle.faultAfter)) → \(outcomes.joined(separator: ", ")); violations \(cycle.violations.count)"
        )
        for violation in cycle.violations { print("  VIOLATION: \(violation)") }
    }

    /// Every agent's convergence time of every cycle, sorted.
    var convergenceTimes: [Duration] { cycles.flatMap { $0.convergence.values }.sorted() }

    static func percentile(_ sorted: [Duration], _ p: Double) -> Duration {
        guard !sorted.isEmpty else { return .zero }
        let rank = Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1
        return sorted[max(0, min(sorted.count - 1, rank))]
    }

    static func seconds(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        return String(format: "%.1fs", Double(seconds) + Double(attoseconds) / 1e18)
    }

    /// `asked`: the cycles the run was asked for; when fewer ran (its time limit), the summary says so.
    mutating func finish(asked: Int) {
        let times = convergenceTimes
        var faults: [ChaosFault: Int] = [:]
        for cycle in cycles { faults[cycle.fault, default: 0] += 1 }
        let elapsed = started.duration(to: .now)
        summary = """
            chaos: \(cycles.count) cycles\(cycles.count < asked ? " (of \(asked) asked: stopped by the time limit)" : "") in \(Self.seconds(elapsed)), seed \(seed), backends \(backends.map(\.testDescription).joined(separator: " + "))
            chaos: faults \(ChaosFault.allCases.map { "\($0.rawValue) \(faults[$0] ?? 0)" }.joined(separator: ", "))
            chaos: violations \(violations.count)
            chaos: convergence p50 \(Self.seconds(Self.percentile(times, 50))), p99 \(Self.seconds(Self.percentile(times, 99))), max \(Self.seconds(times.last ?? .zero)) (bound \(Self.seconds(bound)), \(times.count) agent-cycles)
            """
        print(summary)
    }

    /// The results as Markdown: the summary, the faults × outcomes table, the violations.
    func markdown() -> String {
        var lines = [
            "```", summary, "```", "", "| fault | cycles | new release | rolled back | not converged | violations | convergence p50 | max |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for fault in ChaosFault.allCases {
            let rows = cycles.filter { $0.fault == fault }
            let outcomes = rows.flatMap { $0.outcomes.values }
            let times = rows.flatMap { $0.convergence.values }.sorted()
            let count = { (outcome: Outcome) in outcomes.filter { $0 == outcome }.count }
            let note = unavailable[fault].map { " (left out: \($0))" } ?? ""
            lines.append(
                "| \(fault.rawValue)\(note) | \(rows.count) | \(count(.newRelease)) | \(count(.rolledBack)) | \(count(.notConverged)) | "
                    + "\(rows.reduce(0) { $0 + $1.violations.count }) | \(Self.seconds(Self.percentile(times, 50))) | \(Self.seconds(times.last ?? .zero)) |"
            )
        }
        lines += ["", "| release kind | cycles | new release | rolled back | not converged |", "|---|---|---|---|---|"]
        for kind in ChaosReleaseKind.allCases {
            let outcomes = cycles.filter { $0.kind == kind }.flatMap { $0.outcomes.values }
            let count = { (outcome: Outcome) in outcomes.filter { $0 == outcome }.count }
            lines.append(
                "| \(kind.rawValue) | \(cycles.filter { $0.kind == kind }.count) | \(count(.newRelease)) | \(count(.rolledBack)) | \(count(.notConverged)) |"
            )
        }
        if !violations.isEmpty {
            lines += ["", "Violations:", ""] + violations.map { "- \($0)" }
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
