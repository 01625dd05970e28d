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
            for name in ["agent.token", "trust-pin.json", "machine.json"] {
                var info = stat()
                #expect(stat("\(state)/\(name)", &info) == 0, "\(name) written")
                #expect(info.st_uid == Self.owner.uid && info.st_gid == Self.owner.gid, "\(name) is owned by \(info.st_uid):\(info.st_gid)")
                if name != "machine.json" { #expect(info.st_mode & 0o077 == 0, "\(name) stays private") }
            }
        }
    }
}
