import Foundation
import Shared

/// Reads a PM2 ecosystem file: `ecosystem.config.js`/`.cjs`/`.mjs` through `node`, or `.json`, `.yaml`, `.yml`.
enum EcosystemFile {
    /// Largest ecosystem file (or node output) read.
    static let maximumBytes = 8 << 20

    /// The apps of the file at `path`, as loose JSON objects (PM2's own vocabulary, not yet validated).
    ///
    /// Accepts `{ "apps": [...] }` (PM2's usual form), a bare array of apps, or a single app object.
    static func apps(at path: String, nodeTimeout: Duration = .seconds(30)) async throws -> [JSONValue] {
        let document: JSONValue
        let lower = path.lowercased()
        if lower.hasSuffix(".js") || lower.hasSuffix(".cjs") || lower.hasSuffix(".mjs") {
            document = try await evaluateWithNode(path, timeout: nodeTimeout)
        } else if lower.hasSuffix(".json") {
            let bytes = try read(path)
            do {
                document = try JSONValue.parse(bytes)
            } catch {
                throw ConfigurationError.unreadable(path: path, reason: "\(error)")
            }
        } else if lower.hasSuffix(".yaml") || lower.hasSuffix(".yml") {
            document = try YAMLDocument.parse(String(decoding: try read(path), as: UTF8.self), source: path)
        } else {
            throw ConfigurationError.unreadable(path: path, reason: "unknown ecosystem file type: use .js, .cjs, .mjs, .json, .yaml or .yml")
        }
        switch document {
        case .object(let fields) where fields["apps"] != nil:
            guard case .array(let apps)? = fields["apps"] else {
                throw ConfigurationError.invalid(path: path, field: "apps", reason: "must be an array of apps")
            }
            return apps
        case .array(let apps):
            return apps
        case .object(let fields) where fields["script"] != nil:
            return [document]
        default:
            throw ConfigurationError.invalid(path: path, field: "document", reason: "expected { apps: [...] }, an array of apps, or one app")
        }
    }

    private static func read(_ path: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError.unreadable(
                path: path,
                reason: FileManager.default.fileExists(atPath: path) ? "cannot read file" : "no such file"
            )
        }
        guard data.count <= maximumBytes else { throw ConfigurationError.unreadable(path: path, reason: "larger than \(maximumBytes) bytes") }
        return Array(data)
    }

    /// The script node runs: load the file as PM2 does (CommonJS `require`, or `import` for ES modules), call it when
    /// it exports a function, print the result as JSON.
    static let loaderScript = """
        const path = require('path');
        const url = require('url');
        const file = path.resolve(process.argv[1]);
        (async () => {
          let exported;
          try { exported = require(file); }
          catch (error) {
            if (error && error.code === 'ERR_REQUIRE_ESM') { exported = (await import(url.pathToFileURL(file).href)).default; }
            else { throw error; }
          }
          if (exported && exported.__esModule && exported.default) { exported = exported.default; }
          const value = typeof exported === 'function' ? await exported() : await exported;
          process.stdout.write(JSON.stringify(value === undefined ? null : value));
        })().catch((error) => { process.stderr.write(String(error && error.stack || error)); process.exit(1); });
        """

    /// Evaluates a JavaScript ecosystem file with `node` and returns what it exports.
    static func evaluateWithNode(_ path: String, timeout: Duration) async throws -> JSONValue {
        guard FileManager.default.fileExists(atPath: path) else { throw ConfigurationError.unreadable(path: path, reason: "no such file") }
        guard let node = findExecutable("node") else {
            throw ConfigurationError.unreadable(
                path: path,
                reason: "reading a JavaScript ecosystem file needs node, which is not on PATH; install Node.js or convert the file to .json or .yaml"
            )
        }
        let result = try await ChildProcess.run(node, arguments: ["-e", loaderScript, path], timeout: timeout, outputLimit: maximumBytes)
        guard result.status == 0 else {
            throw ConfigurationError.unreadable(
                path: path,
                reason: "node \(node) exited with status \(result.status): \(result.standardError.prefix(2000))"
            )
        }
        do {
            return try JSONValue.parse(Array(result.standardOutput.utf8))
        } catch {
            throw ConfigurationError.unreadable(path: path, reason: "node printed something that is not JSON: \(error)")
        }
    }

    /// The first executable called `name` on `PATH`.
    static func findExecutable(_ name: String, path: String? = ProcessInfo.processInfo.environment["PATH"]) -> String? {
        for directory in (path ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") where !directory.isEmpty {
            let candidate = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }
}
