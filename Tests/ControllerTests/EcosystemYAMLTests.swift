import Foundation
import Shared
import TestSupport
import Testing

@testable import Controller

/// An `ecosystem.yml` gives each app the variables PM2 7.0.3 gives it: PM2 reads YAML with js-yaml 4.1.0 (the YAML 1.2
/// core schema plus timestamps and `<<` merge keys), not by the YAML 1.1 rules of Ferry's own configuration, which
/// turned `NO` into "false", `0644` into "420" and `9:30` into "570".
@Suite("ecosystem.yml read as PM2's js-yaml reads it")
struct EcosystemYAMLTests {
    struct Row: Sendable, CustomTestStringConvertible {
        /// The value as written after `X: ` in an app's `env`.
        let written: String
        /// The variable `X` PM2 gives the app, or `nil` when the file is refused.
        let variable: String?
        /// What the refusal says, when there is one.
        let refusal: String

        init(_ written: String, _ variable: String) {
            self.written = written
            self.variable = variable
            self.refusal = ""
        }

        init(_ written: String, refusedFor refusal: String) {
            self.written = written
            self.variable = nil
            self.refusal = refusal
        }

        var testDescription: String { "X: \(written) → \(variable.map { "\"\($0)\"" } ?? "refused: \(refusal)")" }
    }

    /// Each expected value is what js-yaml 4.1.0 (from PM2 7.0.3's own node_modules) loads, then what PM2's
    /// `mergeEnvironmentVariables` and its JSON hand-over to the daemon make of it.
    static let rows: [Row] = [
        // Only true/True/TRUE and false/False/FALSE are booleans; YAML 1.1's yes/no/on/off/y/n are text.
        Row("NO", "NO"),
        Row("no", "no"),
        Row("yes", "yes"),
        Row("on", "on"),
        Row("off", "off"),
        Row("Off", "Off"),
        Row("y", "y"),
        Row("n", "n"),
        Row("true", "true"),
        Row("True", "true"),
        Row("FALSE", "false"),
        Row("tRUE", "tRUE"),
        // A leading 0 is decimal; 0o is octal, 0x hexadecimal, 0b binary; `_` separates digits.
        Row("0644", "644"),
        Row("007", "7"),
        Row("00", "0"),
        Row("0o644", "420"),
        Row("0x1F", "31"),
        Row("-0x1F", "-31"),
        Row("0b101", "5"),
        Row("1_000", "1000"),
        Row("-0", "0"),
        Row("+12", "12"),
        // A JavaScript number: past 2^53 it is rounded.
        Row("9007199254740993", "9007199254740992"),
        // No base 60.
        Row("9:30", "9:30"),
        Row("1:30", "1:30"),
        Row("190:20:30.15", "190:20:30.15"),
        // Floats: exponents and bare fractions; `0_1` is a float (an integer may not have `_` after a leading 0).
        Row("1e3", "1000"),
        Row("1.", "1"),
        Row(".5", "0.5"),
        Row("-.5", "-.5"),
        Row("0_1", "1"),
        Row("1_", "1_"),
        // null, which PM2 passes through JSON.stringify in `env`.
        Row("~", "null"),
        Row("null", "null"),
        Row("NULL", "null"),
        Row("", "null"),
        // A timestamp is a JavaScript Date, which PM2 also passes through JSON.stringify in `env`: quotes included.
        Row("2001-12-14", #""2001-12-14T00:00:00.000Z""#),
        Row("2001-12-14t21:59:43.10-05:00", #""2001-12-15T02:59:43.100Z""#),
        Row("0050-01-01", #""1950-01-01T00:00:00.000Z""#),
        Row("2001-1-5", "2001-1-5"),
        // Quoted or tagged.
        Row("'0644'", "0644"),
        Row("!!str 0644", "0644"),
        Row("!!int 0644", "644"),
        Row("=", "="),
        Row("<<", "<<"),
        // PM2 would pass these on as null (an app in fork mode would get no X at all), or refuses the file itself.
        Row(".inf", refusedFor: "not a finite number"),
        Row("-.inf", refusedFor: "not a finite number"),
        Row(".NaN", refusedFor: "not a finite number"),
        Row("1e400", refusedFor: "not a finite number"),
        Row("!!bool yes", refusedFor: "is not a YAML tag:yaml.org,2002:bool"),
    ]

    /// The environment of the one app of an `ecosystem.yml` holding `yaml`, as `publish` reads and normalises it.
    static func environment(of yaml: String, environmentName: String? = nil) async throws -> [String: String] {
        try await TestPaths.withTemporaryDirectory { directory in
            let path = directory.appendingPathComponent("ecosystem.yml").path
            try Data(yaml.utf8).write(to: URL(fileURLWithPath: path))
            let document = try await EcosystemReader.evaluate(at: path).document
            let configuration = EcosystemNormalizer.Configuration(environmentName: environmentName, releaseRoot: directory.path)
            let result = EcosystemNormalizer(configuration: configuration).normalize(document)
            let app = try #require(result.apps.first?.app, "\(result.problems)")
            return (app.object?["env"]?.object ?? [:]).compactMapValues { value -> String? in
                guard case .string(let text) = value else { return nil }
                return text
            }
        }
    }

    @Test(arguments: rows)
    func environmentValue(_ row: Row) async throws {
        let yaml = "apps:\n  - name: api\n    script: server.js\n    env:\n      X: \(row.written)\n"
        if let variable = row.variable {
            #expect(try await Self.environment(of: yaml)["X"] == variable)
        } else {
            await #expect {
                _ = try await Self.environment(of: yaml)
            } throws: { error in
                "\(error)".contains("apps[0].env.X") && "\(error)".contains(row.refusal)
            }
        }
    }

    /// A Date right in an app's `env` goes through `JSON.stringify` (so does a list holding one); one in `env_<name>`
    /// crosses PM2's JSON hand-over to its daemon and arrives as bare ISO text.
    @Test func datesAreWrittenAsPM2PassesThem() async throws {
        let yaml = """
            apps:
              - name: api
                script: server.js
                env:
                  BUILT: 2001-12-14
                  LIST: [2001-12-14, 0644]
                env_production:
                  SHIPPED: 2001-12-14 21:59:43.10 -5
            """
        let environment = try await Self.environment(of: yaml, environmentName: "production")
        #expect(environment["BUILT"] == #""2001-12-14T00:00:00.000Z""#)
        #expect(environment["LIST"] == #"["2001-12-14T00:00:00.000Z",644]"#)
        #expect(environment["SHIPPED"] == "2001-12-15T02:59:43.100Z")
    }

    /// A key is what js-yaml makes of its scalar, as a value, then text (JavaScript's `String()`): `TRUE:` names the
    /// variable "true", `0644:` "644", `~:` "null", a quoted key stays as written. Keys that become the same name refuse
    /// the file, as PM2 does.
    @Test(arguments: [
        ("TRUE", "true"), ("False", "false"), ("0644", "644"), ("0x1F", "31"), ("1_000", "1000"), ("~", "null"), ("NULL", "null"),
        ("1.50", "1.5"), ("\"0644\"", "0644"), ("NO", "NO"), ("9:30", "9:30"),
    ])
    func keysAreNamedAsJavaScriptNamesThem(_ written: String, _ name: String) async throws {
        let yaml = "apps:\n  - name: api\n    script: server.js\n    env:\n      \(written): value\n"
        #expect(try await Self.environment(of: yaml) == [name: "value"])
    }

    @Test(arguments: [("null", "~"), ("TRUE", "true"), ("0644", "644"), ("A", "A")])
    func keysThatBecomeTheSameNameRefuseTheFile(_ first: String, _ second: String) async throws {
        let yaml = "apps:\n  - name: api\n    script: server.js\n    env:\n      \(first): a\n      \(second): b\n"
        await #expect {
            _ = try await Self.environment(of: yaml)
        } throws: { error in
            // Written the same, Yams refuses them itself.
            "\(error)".contains("duplicated mapping key") || "\(error)".contains("duplicated key")
        }
    }

    /// `<<` merges as in js-yaml: a key written in the mapping wins wherever it stands, then the first mapping merged.
    /// A quoted `"<<"` is an ordinary key.
    @Test func mergeKeys() async throws {
        let yaml = """
            apps:
              - name: api
                script: server.js
                env:
                  TIER: api
                  <<: [{TIER: web, REGION: eu}, {REGION: us, ZONE: b}]
                  "<<": quoted
            """
        #expect(try await Self.environment(of: yaml) == ["TIER": "api", "REGION": "eu", "ZONE": "b", "<<": "quoted"])
    }

    /// Ferry's own configuration keeps YAML 1.1, base 60 included: `pollSeconds: 1:30` is 90 seconds.
    @Test func serveConfigurationStaysYAML11() throws {
        try TestPaths.withTemporaryDirectorySync { directory in
            let file = directory.appendingPathComponent("controller.yaml")
            try Data("pollSeconds: 1:30\n".utf8).write(to: file)
            #expect(try ServeSettings.fromFile(file.path).pollSeconds == 90)
        }
    }
}
