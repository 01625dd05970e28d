import Foundation
import Shared
import Testing

@testable import Controller

/// The fleet document's excerpt of a failure's log tails: bounded, keeping the end, marked when cut.
@Suite struct ReleaseFailureFleetTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var tails: [[String]]
        /// What each kept tail holds, and whether it is marked cut.
        var kept: [[String]]
        var truncated: [Bool]

        var testDescription: String { name }
    }

    static let numbered = (1...50).map { "line \($0)" }
    static let long = String(repeating: "x", count: 5000) + " ERROR at the end"

    static let cases: [Case] = [
        Case(name: "a short tail is kept whole", tails: [["a", "b"]], kept: [["a", "b"]], truncated: [false]),
        Case(name: "fifty lines keep the last ten", tails: [numbered], kept: [Array(numbered.suffix(10))], truncated: [true]),
        Case(
            name: "lines beyond 2 KiB are dropped from the start",
            tails: [Array(repeating: String(repeating: "y", count: 900), count: 3)],
            kept: [Array(repeating: String(repeating: "y", count: 900), count: 2)],
            truncated: [true]
        ),
        Case(
            name: "a last line longer than the budget keeps its end",
            tails: [["first", long]],
            kept: [[String(long.suffix(2048))]],
            truncated: [true]
        ),
        Case(
            name: "at most four tails",
            tails: Array(repeating: ["z"], count: 6),
            kept: Array(repeating: ["z"], count: 4),
            truncated: Array(repeating: false, count: 4)
        ),
    ]

    @Test(arguments: cases)
    func theFleetExcerpt(_ row: Case) {
        let logs = row.tails.enumerated().map { index, lines in
            FailureDiagnosis.LogTail(app: "api", pmIds: [Int64(index)], stream: .stderr, lines: lines, truncated: false)
        }
        let diagnosis = FailureDiagnosis(stage: .healthGate, cause: .crashed, at: Date(timeIntervalSince1970: 0), instances: [], logs: logs)
        let excerpt = ReleaseFailure(serial: 2, reason: "crashed", kind: "rolled-back", diagnosis: diagnosis).fleetExcerpt
        let kept = excerpt.diagnosis?.logs ?? []
        #expect(kept.map(\.lines) == row.kept)
        #expect(kept.map(\.truncated) == row.truncated)
        #expect(kept.allSatisfy { $0.lines.reduce(0) { $0 + $1.utf8.count } <= ReleaseFailure.FleetExcerpt.bytes })
        #expect(excerpt.serial == 2 && excerpt.reason == "crashed" && excerpt.diagnosis?.cause == .crashed)
    }

    @Test func aFailureWithoutDiagnosisIsUnchanged() {
        let failure = ReleaseFailure(serial: 3, reason: "refused: expired", kind: "refused")
        #expect(failure.fleetExcerpt == failure)
    }
}
