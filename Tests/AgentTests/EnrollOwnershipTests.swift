import Foundation
import Glibc
import Shared
import TestSupport
import Testing

/// `ferry-agent enroll` run as root (cloud-init, `install-agent.sh`) for an agent that runs as another user: what it
/// writes in that user's state directory is that user's. The trust pin was left root's (mode 0600), and every agent the
/// installer set up stopped at its first start, unable to read it.
@Suite struct EnrollOwnershipTests {
    /// The user the state directory belongs to: `nobody`.
    static let owner: (uid: uid_t, gid: gid_t) = (65_534, 65_534)

    @Test(.enabled(if: geteuid() == 0, "only root can enroll for another user"))
    func whatEnrollWritesIsTheStateDirectoryOwners() async throws {
        try await EnrollReplaceTests.withController("ferry-enroll-owner") { controller, root, publicKey in
            let state = root.appendingPathComponent("state").path
            try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: false)
            #expect(chown(state, Self.owner.uid, Self.owner.gid) == 0)
            let tokenFile = root.appendingPathComponent("token").path
            try controller.token(role: "enroll").write(toFile: tokenFile, atomically: true, encoding: .utf8)
            let machineID = root.appendingPathComponent("machine-id").path
            try "0123456789abcdef0123456789abcdef\n".write(toFile: machineID, atomically: true, encoding: .utf8)
            let result = try await Command.run(
                TestPaths.executable("ferry-agent"),
                [
                    "enroll", "--controller", controller.url, "--token-file", tokenFile, "--config", root.appendingPathComponent("agent.json").path,
                    "--trusted-key", publicKey, "--name", "edge-1", "--state-dir", state, "--service", "web", "--process-manager", "builtin",
                    "--machine-identity", "machine-id", "--machine-id-file", machineID,
                ]
            )
            #expect(result.status == 0, "\(result.stderr)")
            for name in ["agent.token", "trust-pin.json", "machine.json", "agent.lock"] {
                var info = stat()
                #expect(stat("\(state)/\(name)", &info) == 0, "\(name) written")
                #expect(info.st_uid == Self.owner.uid && info.st_gid == Self.owner.gid, "\(name) is owned by \(info.st_uid):\(info.st_gid)")
                if name != "machine.json" { #expect(info.st_mode & 0o077 == 0, "\(name) stays private") }
            }
            // The config is root's, readable by the agent's group, as install-agent.sh leaves it: a bare `enroll --force` as
            // root (what the agent advises after a machine change) left it root's 0600, and the agent could not read it.
            var config = stat()
            #expect(stat(root.appendingPathComponent("agent.json").path, &config) == 0)
            #expect(config.st_uid == 0 && config.st_gid == Self.owner.gid, "the config is owned by \(config.st_uid):\(config.st_gid)")
            #expect(config.st_mode & 0o777 == 0o640, "the config's mode is \(String(config.st_mode & 0o777, radix: 8))")
        }
    }

    /// `enroll` while an agent works on the state directory (it holds `agent.lock`) is refused before the controller is
    /// asked, naming the agent, and changes nothing; once the agent is gone it enrolls. It used to go ahead: the running
    /// agent kept its old token (revoked at once by `--replace`) and wrote its in-memory trust roots back over the ones
    /// the enrolment set aside, which after a restart under the new pin held every release back.
    @Test func enrollWaitsForTheAgentOnItsStateDirectory() async throws {
        try await EnrollReplaceTests.withController("ferry-enroll-locked") { controller, root, publicKey in
            let state = root.appendingPathComponent("state").path
            try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: false)
            let tokenFile = root.appendingPathComponent("token").path
            try controller.token(role: "enroll").write(toFile: tokenFile, atomically: true, encoding: .utf8)
            let config = root.appendingPathComponent("agent.json").path
            let arguments = [
                "enroll", "--controller", controller.url, "--token-file", tokenFile, "--config", config, "--trusted-key", publicKey, "--name",
                "edge-1", "--state-dir", state, "--service", "web", "--process-manager", "builtin", "--machine-identity", "none",
            ]
            // This test process stands in for the running agent: it holds the lock as `ferry-agent run` does.
            let held = try ProcessLock.acquire("\(state)/agent.lock")
            let refused = try await Command.run(TestPaths.executable("ferry-agent"), arguments)
            #expect(refused.status != 0)
            #expect(refused.stderr.contains("cannot enroll while ferry-agent (pid \(getpid())) runs on \(state)"), "\(refused.stderr)")
            #expect(refused.stderr.contains("systemctl stop ferry-agent"), "\(refused.stderr)")
            #expect(!FileManager.default.fileExists(atPath: config), "no config written")
            #expect(!FileManager.default.fileExists(atPath: "\(state)/agent.token"), "no token written")
            #expect(!FileManager.default.fileExists(atPath: "\(state)/agent.token.pending"), "no enrolment offered")
            let agents = try await controller.get("/v1/fleet", token: try controller.token(role: "viewer"))
            #expect(!String(decoding: agents.encodedBytes(), as: UTF8.self).contains("edge-1"), "the controller enrolled nothing")
            close(held)

            let enrolled = try await Command.run(TestPaths.executable("ferry-agent"), arguments)
            #expect(enrolled.status == 0, "\(enrolled.stderr)")
            #expect(FileManager.default.fileExists(atPath: config))
            let after = try await controller.get("/v1/fleet", token: try controller.token(role: "viewer"))
            #expect(String(decoding: after.encodedBytes(), as: UTF8.self).contains("edge-1"), "the fleet lists the agent now")
        }
    }
}
