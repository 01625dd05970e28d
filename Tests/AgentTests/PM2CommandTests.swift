import Foundation
import TestSupport
import Testing

@testable import Agent

@Suite("pm2 commands: the exact argv and the minimal environment of every action")
struct PM2CommandTests {
    /// A directory with executable `pm2` and `node` files, standing for an nvm-style install.
    struct FakeInstall {
        let root: URL
        var bin: String { root.appendingPathComponent("bin").path }

        init() throws {
            root = try TestPaths.makeTemporaryDirectory("ferry-pm2-install")
            try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
            for name in ["pm2", "node"] {
                let script = Data("#!/bin/sh\n".utf8)
                _ = FileManager.default.createFile(atPath: bin + "/" + name, contents: script, attributes: [.posixPermissions: 0o755])
            }
        }

        func cleanUp() { try? FileManager.default.removeItem(at: root) }
    }

    static let ecosystem = "/var/lib/ferry/services/api/ecosystem.json"

    static let operations: [(PM2Command.Operation, [String])] = [
        (.list, ["jlist"]),
        (.start(app: "api", ecosystem: ecosystem), ["start", ecosystem, "--only", "api"]),
        (.reload(app: "api", ecosystem: ecosystem), ["reload", ecosystem, "--only", "api", "--update-env"]),
        // PM2 splits --only on commas and spaces: such a name is started from a file that holds it alone.
        (.start(app: "my api", ecosystem: "/s/apps/my-api-1.json"), ["start", "/s/apps/my-api-1.json"]),
        (.reload(app: "a,b", ecosystem: "/s/apps/a-b-2.json"), ["reload", "/s/apps/a-b-2.json", "--update-env"]),
        (.delete(app: "my api"), ["delete", "my api"]),
        (.delete(app: "api"), ["delete", "api"]),
        (.restart(app: "api"), ["restart", "api"]),
        (.deleteIds(app: "/.*/", ids: [3, 4]), ["delete", "3", "4"]),
        (.restartIds(app: "feed.json", ids: [0]), ["restart", "0"]),
        (.save, ["save", "--force"]),
    ]

    @Test("each action builds exactly this argv, with only PATH, HOME, PM2_HOME and NO_COLOR", arguments: operations.indices)
    func exactCommand(_ index: Int) throws {
        let install = try FakeInstall()
        defer { install.cleanUp() }
        let manager = try PM2ProcessManager(
            configuration: .init(executable: "pm2", pm2Home: "/srv/pm2", home: "/home/ferry", commandTimeout: .seconds(42)),
            logger: .init(label: "test"),
            agentEnvironment: [
                "PATH": "/nonexistent:\(install.bin):/usr/bin",
                "HOME": "/root",
                "FERRY_TOKEN": "secret-token",
                "AWS_SECRET_ACCESS_KEY": "secret-key",
                "NODE_OPTIONS": "--inspect",
            ]
        )
        let (operation, arguments) = Self.operations[index]
        let expected = PM2Command(
            executable: install.bin + "/pm2",
            arguments: arguments,
            environment: [
                "PATH": "\(install.bin):/usr/local/bin:/usr/bin:/bin",
                "HOME": "/home/ferry",
                "PM2_HOME": "/srv/pm2",
                "NO_COLOR": "1",
            ],
            workingDirectory: "/",
            timeout: .seconds(42)
        )
        #expect(manager.command(for: operation) == expected)
    }

    @Test("defaults: PM2_HOME is $HOME/.pm2 of the agent user, PATH adds the node directory, timeout 60 s")
    func defaults() throws {
        let install = try FakeInstall()
        let nodeOnly = try FakeInstall()
        defer {
            install.cleanUp()
            nodeOnly.cleanUp()
        }
        try FileManager.default.removeItem(atPath: nodeOnly.bin + "/pm2")
        let invocation = try PM2Invocation.resolve(
            .init(executable: install.bin + "/pm2"),
            agentEnvironment: ["PATH": "\(nodeOnly.bin):/usr/bin", "HOME": "/home/deploy"]
        )
        #expect(invocation.executable == install.bin + "/pm2")
        #expect(
            invocation.environment == [
                "PATH": "\(install.bin):\(nodeOnly.bin):/usr/local/bin:/usr/bin:/bin",
                "HOME": "/home/deploy",
                "PM2_HOME": "/home/deploy/.pm2",
                "NO_COLOR": "1",
            ]
        )
        #expect(invocation.timeout == .seconds(60))
        #expect(PM2ProcessManager.Configuration().namespace == "ferry")
    }

    @Test("a configured PATH is used verbatim; HOME falls back to the passwd entry when the agent has none")
    func configuredPathAndPasswdHome() throws {
        let install = try FakeInstall()
        defer { install.cleanUp() }
        let invocation = try PM2Invocation.resolve(
            .init(executable: install.bin + "/pm2", path: "/opt/node/bin:/usr/bin"),
            agentEnvironment: [:]
        )
        let passwdHome = try #require(getpwuid(getuid())).pointee.pw_dir.map { String(cString: $0) }
        #expect(invocation.environment["PATH"] == "/opt/node/bin:/usr/bin")
        #expect(invocation.environment["HOME"] == passwdHome)
        #expect(invocation.environment["PM2_HOME"] == (passwdHome ?? "") + "/.pm2")
    }

    @Test("a pm2 that is not there is reported with the directories searched")
    func executableNotFound() throws {
        let install = try FakeInstall()
        defer { install.cleanUp() }
        try FileManager.default.removeItem(atPath: install.bin + "/pm2")
        #expect(throws: PM2Error.executableNotFound(name: "pm2", searched: [install.bin, "/usr/local/bin", "/usr/bin", "/bin"])) {
            try PM2Invocation.resolve(.init(executable: "pm2"), agentEnvironment: ["PATH": install.bin, "HOME": "/h"])
        }
        #expect(throws: PM2Error.executableNotFound(name: install.bin + "/node-missing", searched: [])) {
            try PM2Invocation.resolve(.init(executable: install.bin + "/node-missing"), agentEnvironment: ["HOME": "/h"])
        }
        let notExecutable = install.bin + "/plain"
        _ = FileManager.default.createFile(atPath: notExecutable, contents: Data(), attributes: [.posixPermissions: 0o644])
        #expect(throws: PM2Error.executableNotFound(name: notExecutable, searched: [])) {
            try PM2Invocation.resolve(.init(executable: notExecutable), agentEnvironment: ["HOME": "/h"])
        }
    }

    @Test("a real pm2 call gets exactly the built argv and environment, nothing of the agent's")
    func realCallEnvironment() async throws {
        let standIn = try PM2StandIn()
        defer { standIn.cleanUp() }
        try standIn.setTable(raw: "[]")
        try standIn.queue([.init(["save", "--force"], "save.json")])
        let manager = try standIn.manager()
        _ = try await manager.processes()
        try await manager.save()
        let calls = try standIn.invocations()
        #expect(calls.map(\.argv) == [["jlist"], ["save", "--force"]])
        for call in calls {
            #expect(call.env == manager.invocation.environment)
            #expect(Set(call.env.keys) == ["PATH", "HOME", "PM2_HOME", "NO_COLOR"])
            #expect(call.cwd == "/")
        }
    }

    @Test("commands print as typed, for logs and errors")
    func description() {
        let command = PM2Command(
            executable: "/usr/bin/pm2",
            arguments: ["start", "/srv/my app/eco.json", "--only", "api"],
            environment: ["HOME": "/h"],
            workingDirectory: "/",
            timeout: .seconds(1)
        )
        #expect(command.description == "/usr/bin/pm2 start '/srv/my app/eco.json' --only api")
    }
}
