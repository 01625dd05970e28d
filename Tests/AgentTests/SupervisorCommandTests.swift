import ArgumentParser
import Foundation
import Supervisor
import Testing

@testable import Agent

/// `ferry-agent supervisor`: the agent's entry point to the builtin supervisor daemon.
@Suite("Supervisor command")
struct SupervisorCommandTests {
    @Test("the supervisor command parses its options and rejects bad ones")
    func commandLine() throws {
        let command = try #require(try AgentCommand.parseAsRoot(["supervisor", "--home", "/tmp/fs-x", "--log-keep", "5"]) as? SupervisorCommand)
        #expect(command.home == "/tmp/fs-x" && command.logKeep == 5 && !command.stop && command.namespace == "ferry")
        #expect(command.clientConfiguration.logRotation == LogRotation(maximumFileBytes: 10 << 20, keptFiles: 5))
        let stop = try #require(try AgentCommand.parseAsRoot(["supervisor", "--home", "/tmp/fs-x", "--stop"]) as? SupervisorCommand)
        #expect(stop.stop)
        for bad in [
            ["supervisor"], ["supervisor", "--home", "/tmp/x", "--log-keep", "500"],
            ["supervisor", "--home", "/tmp/x", "--backoff-initial-ms", "0"],
            ["supervisor", "--home", "/tmp/x", "--backoff-max-ms", "9223372036854775807"],
            ["supervisor", "--home", "/tmp/x", "--backoff-max-ms", "86400001"],
        ] {
            #expect(throws: (any Error).self, "\(bad)") { try AgentCommand.parseAsRoot(bad) }
        }
        let listed = AgentCommand.helpMessage().split(separator: "\n").contains { $0.trimmingCharacters(in: .whitespaces).hasPrefix("supervisor") }
        #expect(!listed, "the supervisor command stays out of help")
    }
}
