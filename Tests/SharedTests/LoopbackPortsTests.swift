import Foundation
import TestSupport
import Testing

/// Test ports are never handed out twice, within a test process or across the test processes of one machine.
@Suite struct LoopbackPortsTests {
    @Test func aHandedOutPortIsHeldForThisProcess() throws {
        let port = try LoopbackPorts.reserve()
        // A second claim opens the lock file anew: a lock of its own, refused like another process's would be.
        #expect(!LoopbackPorts.claim(port), "port \(port) could be claimed again")
        #expect(try LoopbackPorts.reserve() != port)
    }

    @Test func aPortAnotherProcessHoldsIsNotHandedOut() async throws {
        // Ports far from the ones this process hands out now, so the tests running alongside do not claim them first;
        // should one be taken anyway (the other process's `flock -n` then exits at once), the next is tried.
        let start = try LoopbackPorts.reserve()
        for candidate in 1...5 {
            let port = LoopbackPorts.low + (start - LoopbackPorts.low + LoopbackPorts.window / 2 + candidate) % LoopbackPorts.window
            let lockFile = "\(LoopbackPorts.claimDirectory)/\(port).lock"
            let said = FileManager.default.temporaryDirectory.appendingPathComponent("ferry-port-holder-\(UUID().uuidString)").path
            defer { try? FileManager.default.removeItem(atPath: said) }
            // Another process (util-linux `flock`) takes the port's lock and says so.
            let holder = try SpawnedProcess(
                executable: "/usr/bin/flock",
                arguments: ["-n", lockFile, "sh", "-c", "echo held; exec sleep 30"],
                standardOutput: .appending(path: said)
            )
            defer {
                holder.signal(SIGKILL)
                _ = holder.waitUntilExit()
            }
            let held = try await eventually("flock on \(lockFile) holds it or gives up", timeout: .seconds(10), interval: .milliseconds(20)) {
                () -> Bool? in
                if (try? String(contentsOfFile: said, encoding: .utf8))?.contains("held") == true { return true }
                return holder.isRunning ? nil : false
            }
            guard held else { continue }
            #expect(!LoopbackPorts.claim(port), "port \(port) was claimed while another process held it")
            return
        }
        Issue.record("five candidate ports were all taken before the other process could lock one")
    }
}
