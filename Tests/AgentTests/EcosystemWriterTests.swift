import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

@Suite("EcosystemWriter: the generated ecosystem.json")
struct PM2EcosystemFileTests {
    static let current = "/var/lib/ferry/services/api/current"

    static func parse(_ bytes: [UInt8]) throws -> [String: JSONValue] {
        guard case .object(let document) = try JSONValue.parse(bytes), case .array(let apps)? = document["apps"],
            case .object(let app)? = apps.first
        else { throw PM2Error.unreadableTable(reason: "not an ecosystem file", excerpt: "") }
        return app
    }

    @Test("writes every field Ferry decides, explicitly")
    func fields() throws {
        var spec = AppSpec.pm2TestApp(
            "api",
            script: Self.current + "/dist/server.js",
            cwd: Self.current,
            mode: .cluster,
            instances: 4,
            env: ["PORT": "3000", "NODE_ENV": "production"]
        )
        spec.args = ["--port", "3000"]
        spec.interpreterArgs = ["--max-old-space-size=512"]
        spec.maxMemoryBytes = 300 << 20
        let app = try Self.parse(EcosystemWriter.render(apps: [spec], namespace: "ferry"))
        #expect(
            app == [
                "name": .string("api"),
                "script": .string(Self.current + "/dist/server.js"),
                "cwd": .string(Self.current),
                "namespace": .string("ferry"),
                "interpreter": .string("node"),
                "node_args": .array([.string("--max-old-space-size=512")]),
                "args": .array([.string("--port"), .string("3000")]),
                "instances": .integer(4),
                "exec_mode": .string("cluster"),
                "env": .object(["PORT": .string("3000"), "NODE_ENV": .string("production")]),
                "autorestart": .bool(true),
                "max_restarts": .integer(16),
                "min_uptime": .integer(1000),
                "restart_delay": .integer(0),
                "kill_timeout": .integer(1600),
                "max_memory_restart": .integer(300 << 20),
            ]
        )
    }

    /// PM2 merges a fork app's logs (`web-out.log`) unless the file sets `instances` or `merge_logs`
    /// (`Common.verifyConfs`); Ferry always writes `instances`, so it writes PM2's default out.
    static let mergeLogsCases: [(label: String, mode: ExecMode, options: [String: JSONValue], expected: JSONValue?)] = [
        ("fork, the release sets neither: PM2's default, merged", .fork, [:], .bool(true)),
        ("fork, instances 0 (PM2: falsy)", .fork, ["instances": .integer(0)], .bool(true)),
        ("fork, instances \"max\" (PM2 reads 0)", .fork, ["instances": .string("max")], .bool(true)),
        ("fork, instances 2: per-instance files, as PM2", .fork, ["instances": .integer(2)], nil),
        ("fork, instances 1 set by the release: as PM2, not merged", .fork, ["instances": .integer(1)], nil),
        ("fork, the release says merge_logs false", .fork, ["merge_logs": .bool(false)], .bool(false)),
        ("cluster: PM2 never merges by default", .cluster, [:], nil),
        ("cluster, the release says merge_logs true", .cluster, ["merge_logs": .bool(true)], .bool(true)),
    ]

    @Test("merge_logs is PM2's default for fork apps without instances", arguments: mergeLogsCases.indices)
    func mergeLogs(_ index: Int) throws {
        let row = Self.mergeLogsCases[index]
        let spec = AppSpec.pm2TestApp("api", script: Self.current + "/server.js", cwd: Self.current, mode: row.mode, pm2Options: row.options)
        let app = try Self.parse(EcosystemWriter.render(apps: [spec], namespace: "ferry"))
        #expect(app["merge_logs"] == row.expected, "\(row.label)")
    }

    @Test("a script run directly gets interpreter none (PM2 would otherwise guess from the extension)")
    func directExecution() throws {
        let spec = AppSpec.pm2TestApp("bin", script: Self.current + "/bin/server", cwd: Self.current, interpreter: nil)
        let app = try Self.parse(EcosystemWriter.render(apps: [spec], namespace: "ferry"))
        #expect(app["interpreter"] == .string("none"))
        #expect(app["args"] == .array([]))
        #expect(app["max_memory_restart"] == nil)
    }

    @Test("release options pass through unless Ferry sets or owns them")
    func passThrough() throws {
        let options: [String: JSONValue] = [
            "wait_ready": .bool(true),
            "listen_timeout": .integer(8000),
            "cron_restart": .string("0 3 * * *"),
            "exec_mode": .string("fork"),
            "instances": .string("max"),
            "env": .object(["SECRET": .string("from-the-release-options")]),
            "cwd": .string("/elsewhere"),
            "namespace": .string("default"),
            "out_file": .string("/tmp/out.log"),
            "node_args": .string("--inspect"),
            "interpreter": .string("bun"),
        ]
        let spec = AppSpec.pm2TestApp(
            "api",
            script: Self.current + "/server.js",
            cwd: Self.current,
            mode: .cluster,
            instances: 2,
            pm2Options: options
        )
        let app = try Self.parse(EcosystemWriter.render(apps: [spec], namespace: "ferry"))
        #expect(app["wait_ready"] == .bool(true))
        #expect(app["listen_timeout"] == .integer(8000))
        #expect(app["cron_restart"] == .string("0 3 * * *"))
        #expect(app["exec_mode"] == .string("cluster"))
        #expect(app["instances"] == .integer(2))
        #expect(app["env"] == .object([:]))
        #expect(app["cwd"] == .string(Self.current))
        #expect(app["namespace"] == .string("ferry"))
        #expect(app["out_file"] == nil)
        #expect(app["node_args"] == .array([]))
        #expect(app["interpreter"] == .string("node"))
    }

    @Test("the same apps always render the same bytes: pretty, sorted keys, final newline, apps in order")
    func stableBytes() throws {
        let apps = [
            AppSpec.pm2TestApp("web", script: Self.current + "/web.js", cwd: Self.current, env: ["B": "2", "A": "1"]),
            AppSpec.pm2TestApp("worker", script: Self.current + "/worker.js", cwd: Self.current),
        ]
        let bytes = EcosystemWriter.render(apps: apps, namespace: "ferry")
        #expect(bytes == EcosystemWriter.render(apps: apps, namespace: "ferry"))
        #expect(bytes.last == 0x0A)
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.contains("\n    {\n"))
        #expect(text.contains(#""script" : "/var/lib/ferry/services/api/current/web.js""#), "slashes are not escaped")
        let webAt = try #require(text.range(of: #""name" : "web""#))
        let workerAt = try #require(text.range(of: #""name" : "worker""#))
        #expect(webAt.lowerBound < workerAt.lowerBound)
        let envA = try #require(text.range(of: #""A" : "1""#))
        let envB = try #require(text.range(of: #""B" : "2""#))
        #expect(envA.lowerBound < envB.lowerBound)
    }
}
