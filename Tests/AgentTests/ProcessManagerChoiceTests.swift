import Foundation
import TestSupport
import Testing

@testable import Agent

/// `auto` follows the process manager the apps run under, recorded by the starting agent: `pm2` appearing on a host whose
/// apps run under the builtin supervisor (or vanishing from one whose apps run under PM2) must not start them twice.
@Suite("The process manager an instance's apps run under is decided once")
struct ProcessManagerChoiceTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var testDescription: String
        var configured: ProcessManagerKind
        /// The record's bytes before the start, `nil` for none.
        var recorded: String?
        var pm2Found: Bool
        var records = true
        /// `true` PM2, `false` builtin, `nil` refused (the message must contain `refusal`).
        var usesPM2: Bool?
        var refusal = ""
        /// The record after, `nil` for none.
        var after: String?
    }

    static let cases: [Case] = [
        Case(testDescription: "first start, pm2 on PATH", configured: .auto, pm2Found: true, usesPM2: true, after: "pm2\n"),
        Case(testDescription: "first start, no pm2", configured: .auto, pm2Found: false, usesPM2: false, after: "builtin\n"),
        Case(
            testDescription: "pm2 installed on a builtin host: the apps stay under the supervisor",
            configured: .auto,
            recorded: "builtin\n",
            pm2Found: true,
            usesPM2: false,
            after: "builtin\n"
        ),
        Case(
            testDescription: "pm2 gone from PATH on a PM2 host: refused, not started twice",
            configured: .auto,
            recorded: "pm2\n",
            pm2Found: false,
            usesPM2: nil,
            refusal: "the apps run under PM2",
            after: "pm2\n"
        ),
        Case(testDescription: "a PM2 host as usual", configured: .auto, recorded: "pm2", pm2Found: true, usesPM2: true, after: "pm2"),
        Case(
            testDescription: "the operator names the supervisor: it is recorded",
            configured: .builtin,
            recorded: "pm2\n",
            pm2Found: true,
            usesPM2: false,
            after: "builtin\n"
        ),
        Case(
            testDescription: "the operator names PM2: it is recorded",
            configured: .pm2,
            recorded: "builtin\n",
            pm2Found: false,
            usesPM2: true,
            after: "pm2\n"
        ),
        Case(
            testDescription: "a command that only looks records nothing",
            configured: .auto,
            pm2Found: true,
            records: false,
            usesPM2: true,
            after: nil
        ),
        Case(
            testDescription: "a damaged record is refused, not guessed at",
            configured: .auto,
            recorded: "pm3\n",
            pm2Found: true,
            usesPM2: nil,
            refusal: "does not name pm2 or builtin",
            after: "pm3\n"
        ),
        Case(
            testDescription: "the operator names a process manager over a damaged record: it is recorded",
            configured: .builtin,
            recorded: "pm3\n",
            pm2Found: true,
            usesPM2: false,
            after: "builtin\n"
        ),
        Case(
            testDescription: "auto is no record",
            configured: .auto,
            recorded: "auto\n",
            pm2Found: true,
            usesPM2: nil,
            refusal: "does not name pm2 or builtin",
            after: "auto\n"
        ),
    ]

    @Test(arguments: cases)
    func decides(_ testCase: Case) throws {
        try TestPaths.withTemporaryDirectorySync("ferry-pm-choice") { dir in
            let layout = AgentLayout(stateDir: dir.path)
            if let recorded = testCase.recorded { try Data(recorded.utf8).write(to: URL(fileURLWithPath: layout.processManagerFile)) }
            do {
                let usesPM2 = try ProcessManagerChoice.usesPM2(
                    testCase.configured,
                    pm2Found: testCase.pm2Found,
                    layout: layout,
                    records: testCase.records
                )
                #expect(usesPM2 == testCase.usesPM2)
            } catch {
                #expect(testCase.usesPM2 == nil, "refused: \(error)")
                #expect("\(error)".contains(testCase.refusal), "\(error)")
            }
            let after = FileManager.default.contents(atPath: layout.processManagerFile).map { String(decoding: $0, as: UTF8.self) }
            #expect(after == testCase.after)
        }
    }
}
