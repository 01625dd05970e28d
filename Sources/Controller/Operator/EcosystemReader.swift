import Foundation
import Shared

/// Reads a PM2 ecosystem file the way PM2 does: `ecosystem.config.js`/`.cjs`/`.mjs` through node, `.json` as a
/// JavaScript object literal (PM2 evaluates it, so comments and trailing commas are fine), `.yaml`/`.yml` as YAML.
///
/// JavaScript runs in a child process whose environment holds only the variables the operator passes
/// (`--pass-env NAME`) plus a minimal `PATH` and `HOME`: a file that spreads `...process.env` into an app's `env`
/// gets nothing of the publisher's secrets, and every variable the file reads is reported.
enum EcosystemReader {
    /// Largest ecosystem file (or node output) read.
    static let maximumBytes = 8 << 20

    /// `PATH` of the evaluating child, after the directory of `node`.
    static let minimalPath = "/usr/local/bin:/usr/bin:/bin"

    /// An evaluated ecosystem file.
    struct Evaluation: Sendable, Equatable {
        /// What the file exports, in PM2's shapes (`{apps: [...]}`, an array, one app).
        var document: JSONValue
        /// Environment variables the file read, sorted.
        var readVariables: [String] = []
        /// Whether the file enumerated the environment (`...process.env`, `Object.keys(process.env)`).
        var enumeratedEnvironment = false
        /// The whole environment the evaluation saw.
        var environment: [String: String] = [:]

        /// One line for the operator about what the file read, or `nil` when it read nothing.
        var readReport: String? {
            let passed = readVariables.filter { environment[$0] != nil && $0 != "PATH" && $0 != "HOME" }
            let missing = readVariables.filter { environment[$0] == nil }
            var parts: [String] = []
            if enumeratedEnvironment {
                parts.append("enumerated process.env, which held only PATH, HOME and the --pass-env variables")
            }
            if !passed.isEmpty { parts.append("read \(passed.joined(separator: ", ")) (passed with --pass-env)") }
            if !missing.isEmpty {
                parts.append("read \(missing.joined(separator: ", ")), which it saw unset: pass a variable with --pass-env NAME to give it")
            }
            return parts.isEmpty ? nil : "the ecosystem file " + parts.joined(separator: "; ")
        }
    }

    /// Evaluates the file at `path`.
    ///
    /// - Parameters:
    ///   - passEnvironment: names of this process's environment variables the file may see (`--pass-env`).
    ///   - hostEnvironment: this process's environment (the source of passed variables, `PATH` to find node, `HOME`).
    static func evaluate(
        at path: String,
        passEnvironment: [String] = [],
        hostEnvironment: [String: String] = ProcessInfo.processInfo.environment,
        nodeTimeout: Duration = .seconds(30)
    ) async throws -> Evaluation {
        let lower = path.lowercased()
        let context = EvaluationContext(path: path, passEnvironment: passEnvironment, hostEnvironment: hostEnvironment, timeout: nodeTimeout)
        if lower.hasSuffix(".js") || lower.hasSuffix(".cjs") || lower.hasSuffix(".mjs") {
            return try await context.evaluateWithNode(mode: "module")
        } else if lower.hasSuffix(".json") {
            let bytes = try read(path)
            if let document = try? JSONValue.parse(bytes) { return Evaluation(document: document) }
            // PM2 reads a .json file as a JavaScript expression: comments, trailing commas and single quotes are fine.
            do {
                return try await context.evaluateWithNode(mode: "expression")
            } catch let error as ConfigurationError {
                let strict = Self.parseFailure(bytes)
                throw ConfigurationError.unreadable(path: path, reason: "not strict JSON (\(strict)), and as PM2 reads it: \(Self.reason(of: error))")
            }
        } else if lower.hasSuffix(".yaml") || lower.hasSuffix(".yml") {
            return Evaluation(document: try readYAML(String(decoding: try read(path), as: UTF8.self), source: path))
        } else {
            throw ConfigurationError.unreadable(path: path, reason: "unknown ecosystem file type: use .js, .cjs, .mjs, .json, .yaml or .yml")
        }
    }

    /// An `ecosystem.yml` as PM2 7 reads it (`Common.parseConfig`: js-yaml 4's `load`), not by the YAML 1.1 rules of
    /// Ferry's own configuration, which would ship `COUNTRY: NO` as "false", `FILE_MODE: 0644` as "420" and
    /// `OPENS_AT: 9:30` as "570" where PM2 gives the app `NO`, `644` and `9:30`.
    ///
    /// A timestamp (`BUILT: 2001-12-14`) is a JavaScript `Date` there. PM2 sends an app to its daemon as JSON, where a
    /// Date becomes its ISO text, but `mergeEnvironmentVariables` first passes each object in an app's `env` through
    /// `JSON.stringify`: a Date right in `env` reaches the app in double quotes, `"2001-12-14T00:00:00.000Z"`. So the
    /// text is read with dates as ISO text, and again as JSON text for each app's direct `env` values.
    private static func readYAML(_ text: String, source: String) throws(ConfigurationError) -> JSONValue {
        let document = try YAMLDocument.parse(text, source: source, schema: .jsYAML(dates: .iso))
        let stringified = try YAMLDocument.parse(text, source: source, schema: .jsYAML(dates: .json))
        guard stringified != document else { return document }
        // The two readings differ only in dates: the second's strings in an app's `env` are the ones PM2 passes.
        func appWithStringifiedDates(_ app: JSONValue, from other: JSONValue) -> JSONValue {
            guard case .object(var fields) = app, case .object(var environment)? = fields["env"], let otherEnvironment = other.object?["env"]?.object
            else { return app }
            for (name, value) in otherEnvironment {
                if case .string = value { environment[name] = value }
            }
            fields["env"] = .object(environment)
            return .object(fields)
        }
        func appsWithStringifiedDates(_ apps: JSONValue, from other: JSONValue) -> JSONValue {
            guard case .array(let items) = apps, case .array(let otherItems) = other else { return appWithStringifiedDates(apps, from: other) }
            return .array(zip(items, otherItems).map { appWithStringifiedDates($0, from: $1) })
        }
        // Where PM2's `_startJson` finds the apps: `apps`, else `pm2`, else the document itself; one app or a list.
        guard case .object(var fields) = document, let otherFields = stringified.object,
            let key = ["apps", "pm2"].first(where: { JavaScriptSemantics.isTruthy(fields[$0]) })
        else { return appsWithStringifiedDates(document, from: stringified) }
        fields[key] = appsWithStringifiedDates(fields[key] ?? .null, from: otherFields[key] ?? .null)
        return .object(fields)
    }

    private static func parseFailure(_ bytes: [UInt8]) -> String {
        do {
            _ = try JSONValue.parse(bytes)
            return "parsed"
        } catch {
            return "\(error)"
        }
    }

    private static func reason(of error: ConfigurationError) -> String {
        if case .unreadable(_, let reason) = error { return reason }
        return "\(error)"
    }

    static func read(_ path: String) throws -> [UInt8] {
        do throws(SmallFile.ContentsError) {
            return try SmallFile.contents(of: path, limit: maximumBytes)
        } catch {
            throw ConfigurationError.unreadable(path: path, reason: "\(error)")
        }
    }

    /// The script node runs: swap `process.env` for a Proxy that records what is read, load the file as PM2 does
    /// (CommonJS `require`, `import` for ES modules, or a `.json` file as a JavaScript expression), call it when it
    /// exports a function, and print `{value, read, enumerated}` as JSON. What the file itself prints (`console.log`,
    /// dotenv 17's "injecting env" line, on stdout by default) goes to stderr: only the result is on stdout.
    static let loaderScript = """
        const emit = process.stdout.write.bind(process.stdout);
        process.stdout.write = process.stderr.write.bind(process.stderr);
        const path = require('path'), url = require('url'), fs = require('fs'), vm = require('vm');
        const file = path.resolve(process.argv[1]);
        const mode = process.argv[2];
        const read = new Set();
        let enumerated = false;
        const realEnvironment = process.env;
        process.env = new Proxy(realEnvironment, {
          get(target, key) { if (typeof key === 'string') read.add(key); return target[key]; },
          has(target, key) { if (typeof key === 'string') read.add(key); return key in target; },
          ownKeys(target) { enumerated = true; return Reflect.ownKeys(target); },
        });
        (async () => {
          let exported;
          if (mode === 'expression') {
            exported = vm.runInThisContext('(' + fs.readFileSync(file, 'utf8') + ')', { filename: file, timeout: 1000 });
          } else {
            try { exported = require(file); }
            catch (error) {
              if (error && (error.code === 'ERR_REQUIRE_ESM' || error.code === 'ERR_REQUIRE_ASYNC_MODULE')) {
                exported = (await import(url.pathToFileURL(file).href)).default;
              } else { throw error; }
            }
            if (exported && exported.__esModule && exported.default) { exported = exported.default; }
          }
          const value = typeof exported === 'function' ? await exported() : await exported;
          const seen = [...read].filter((name) => !name.startsWith('NODE_') || name in realEnvironment);
          emit(JSON.stringify({ value: value === undefined ? null : value, read: seen.sort(), enumerated }));
        })().catch((error) => { process.stderr.write(String(error && error.stack || error)); process.exit(1); });
        """

    /// The first executable called `name` on `PATH`.
    static func findExecutable(_ name: String, path: String? = ProcessInfo.processInfo.environment["PATH"]) -> String? {
        EcosystemNormalizer.which(name, path: path)
    }
}

/// One evaluation: the file, what it may see, how long it may take.
private struct EvaluationContext {
    let path: String
    let passEnvironment: [String]
    let hostEnvironment: [String: String]
    let timeout: Duration

    /// The child's whole environment: `--pass-env` variables, `PATH` (node's directory first) and `HOME`.
    func environment(node: String) -> [String: String] {
        var environment: [String: String] = [:]
        for name in passEnvironment { environment[name] = hostEnvironment[name] }
        if environment["PATH"] == nil {
            let directory = (node as NSString).deletingLastPathComponent
            environment["PATH"] =
                EcosystemReader.minimalPath.split(separator: ":").contains(Substring(directory))
                ? EcosystemReader.minimalPath : "\(directory):\(EcosystemReader.minimalPath)"
        }
        if environment["HOME"] == nil { environment["HOME"] = hostEnvironment["HOME"] ?? NSHomeDirectory() }
        return environment
    }

    func evaluateWithNode(mode: String) async throws -> EcosystemReader.Evaluation {
        guard FileManager.default.fileExists(atPath: path) else { throw ConfigurationError.unreadable(path: path, reason: "no such file") }
        guard let node = EcosystemReader.findExecutable("node", path: hostEnvironment["PATH"]) else {
            throw ConfigurationError.unreadable(
                path: path,
                reason: "reading it as PM2 does needs node, which is not on PATH; install Node.js or convert the file to strict .json or .yaml"
            )
        }
        let environment = environment(node: node)
        // Absolute: the child runs in the file's directory, where a relative path would point elsewhere.
        let absolute = URL(fileURLWithPath: path).standardizedFileURL.path
        let directory = (absolute as NSString).deletingLastPathComponent
        let result: CommandRunner.Output
        do {
            result = try await CommandRunner.run(
                CommandRunner.Request(
                    executable: node,
                    arguments: ["-e", EcosystemReader.loaderScript, absolute, mode],
                    environment: environment,
                    workingDirectory: directory,
                    standardOutputLimit: EcosystemReader.maximumBytes,
                    standardErrorLimit: EcosystemReader.maximumBytes,
                    timeout: timeout
                )
            )
        } catch {
            throw ConfigurationError.unreadable(path: path, reason: "node \(node) -e …: \(error)")
        }
        let standardError = String(decoding: result.standardError, as: UTF8.self)
        switch result.termination {
        case .exited(0):
            break
        case .exited(let status):
            throw ConfigurationError.unreadable(path: path, reason: "node \(node) exited with status \(status): \(standardError.prefix(2000))")
        case .signalled(let signal):
            throw ConfigurationError.unreadable(path: path, reason: "node \(node) was killed by signal \(signal): \(standardError.prefix(2000))")
        }
        let output: JSONValue
        do {
            output = try JSONValue.parse(result.standardOutput)
        } catch {
            throw ConfigurationError.unreadable(path: path, reason: "node printed something that is not JSON: \(error)")
        }
        var evaluation = EcosystemReader.Evaluation(document: output.object?["value"] ?? .null, environment: environment)
        if case .array(let names)? = output.object?["read"] {
            evaluation.readVariables = names.compactMap { if case .string(let name) = $0 { name } else { nil } }
        }
        evaluation.enumeratedEnvironment = output.object?["enumerated"] == .bool(true)
        return evaluation
    }
}
