import Foundation
import Shared
import Synchronization
import TestSupport

/// The releases the chaos loop publishes: a small Node HTTP app in three kinds, and the file list of each version so
/// the invariants can check that `current` is a complete tree.
enum ChaosArtifacts {
    /// Every file of each published version, relative path → size.
    private static let manifests = Mutex<[String: [String: Int]]>([:])

    static func manifest(of version: String) -> [String: Int]? {
        manifests.withLock { $0[version] }
    }

    /// The app's `server.js` for `kind`: answers `<version> pid=<pid>` (good), throws at boot (crashing), or answers
    /// 503 (unhealthy). SIGINT stops it gracefully, as PM2 and the supervisor stop an app.
    static func server(_ kind: ChaosReleaseKind) -> String {
        switch kind {
        case .crashing:
            return "throw new Error('this release is broken at boot');\n"
        case .good, .unhealthy:
            let status = kind == .good ? 200 : 503
            return """
                const http = require('http'), fs = require('fs'), path = require('path');
                const version = fs.readFileSync(path.join(__dirname, 'VERSION'), 'utf8').trim();
                const server = http.createServer((req, res) => {
                    res.setHeader('Connection', 'close');
                    res.statusCode = \(status);
                    res.end(version + ' pid=' + process.pid);
                }).listen(Number(process.env.PORT), '127.0.0.1');
                process.on('SIGINT', () => { server.close(() => process.exit(0)); setTimeout(() => process.exit(0), 2000).unref(); });

                """
        }
    }

    /// Builds the artifact of `version`, uploads it, signs and publishes the release (no failure tolerance limit, so
    /// every agent is offered every release whatever another one did with it). Returns the publish's status and body.
    static func publish(_ fleet: FleetFixture, serial: Int64, version: String, kind: ChaosReleaseKind) async throws -> (status: Int, body: String) {
        let tree = fleet.root.appendingPathComponent("chaos-build/\(version)")
        try FileManager.default.createDirectory(at: tree.appendingPathComponent("lib"), withIntermediateDirectories: true)
        let files: [String: String] = [
            "server.js": server(kind),
            "VERSION": version,
            "package.json": "{\"name\": \"chaos\", \"version\": \"\(version)\"}\n",
            "lib/data.txt": String(repeating: "\(version) \(kind.rawValue)\n", count: 64),
        ]
        for (path, text) in files { try text.write(to: tree.appendingPathComponent(path), atomically: true, encoding: .utf8) }
        manifests.withLock { $0[version] = files.mapValues { $0.utf8.count } }
        let archive = fleet.root.appendingPathComponent("chaos-build/web-\(version).tgz")
        let result = try await Command.run("tar", ["czf", archive.path, "-C", tree.path, "."])
        guard result.status == 0 else { throw HarnessError("tar failed: \(result.stderr)") }
        let artifact = try await fleet.controller.upload(archive, token: fleet.operatorToken)
        let envelope = try fleet.release(serial: serial, version: version, artifact: artifact, port: 0, deadline: 10, stable: 1)
        let (status, body) = try await fleet.controller.publish(envelope, token: fleet.operatorToken, query: "maxFailures=100000")
        return (status, body)
    }
}
