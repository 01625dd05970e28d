import Foundation
import Shared
import TestSupport
import Testing

/// The fleet benchmark's scenario as a check: 500 simulated agents (one connection each) against the built
/// `ferry-controller`, every one parked on a long-poll, one publish through the real CLI. Fails when an agent is not
/// woken with the new release or is answered before its wait ends while nothing changed — never on timing (the
/// figures it prints are for reading, on this shared machine they say little). The two runs (plain, TLS) take a
/// core each while they last: serialized, so the rest of the suite keeps one. Where nginx is installed (CI installs
/// it), each run also replays its burst of reports against nginx, the benchmark's baseline, which must answer all 500.
@Suite(.serialized) struct FleetBenchTests {
    @Test(arguments: [false, true])
    func fiveHundredAgentsAreEachWokenOnceByAPublish(tls: Bool) async throws {
        let bench = TestPaths.executable("FleetBench")
        let controller = TestPaths.executable("ferry-controller")
        var arguments = ["--agents", "500", "--controller-bin", controller, "--wait", "40", "--enroll-concurrency", "16"]
        if tls { arguments.append("--tls") }
        let nginx = "/usr/sbin/nginx"
        let baseline = FileManager.default.isExecutableFile(atPath: nginx)
        if baseline { arguments += ["--nginx", nginx] }
        let output = try await CommandRunner.run(
            CommandRunner.Request(
                executable: bench,
                arguments: arguments,
                environment: ["PATH": "/usr/bin:/bin", "HOME": FileManager.default.temporaryDirectory.path],
                timeout: .seconds(600)
            )
        )
        let text = String(decoding: output.standardOutput, as: UTF8.self)
        let errors = String(decoding: output.standardError, as: UTF8.self)
        print(text)
        #expect(output.termination == .exited(0), "FleetBench failed:\n\(text)\n\(errors.suffix(2000))")
        #expect(text.contains("result: ok (missed 0, early 0)"))
        #expect(text.contains("500 woken"))
        #expect(text.contains("report failures                     0"))
        if baseline {
            #expect(text.contains("  the same reports to nginx (204)"), "no baseline line:\n\(text)")
            #expect(text.contains("  report burst p99, controller / nginx"))
        }
    }
}
