import Shared
import Testing

@testable import Supervisor

/// What an instance's environment holds: PM2 7's `instance_var` and `increment_var` (`God.injectVariables`), with the
/// values a real PM2 7.0.3 gave its apps for the same definitions.
@Suite("App spec environment")
struct AppSpecEnvironmentTests {
    struct EnvironmentCase: Sendable, CustomTestStringConvertible {
        let name: String
        let env: [String: String]
        let options: [String: JSONValue]
        let index: Int
        /// Expected values; `nil` means the variable must be absent.
        let expected: [String: String?]
        var testDescription: String { name }
    }

    static let environmentCases: [EnvironmentCase] = [
        EnvironmentCase(
            name: "no options: NODE_APP_INSTANCE is the index",
            env: ["PORT": "3000"],
            options: [:],
            index: 3,
            expected: ["NODE_APP_INSTANCE": "3", "PORT": "3000"]
        ),
        EnvironmentCase(
            name: "increment_var PORT and instance_var INSTANCE_ID: PORT counts up, NODE_APP_INSTANCE is renamed",
            env: ["PORT": "4000"],
            options: ["increment_var": .string("PORT"), "instance_var": .string("INSTANCE_ID")],
            index: 2,
            expected: ["PORT": "4002", "INSTANCE_ID": "2", "NODE_APP_INSTANCE": nil]
        ),
        EnvironmentCase(
            name: "index 0 keeps the base",
            env: ["PORT": "4000"],
            options: ["increment_var": .string("PORT")],
            index: 0,
            expected: ["PORT": "4000", "NODE_APP_INSTANCE": "0"]
        ),
        EnvironmentCase(
            name: "the app's own NODE_APP_INSTANCE wins",
            env: ["NODE_APP_INSTANCE": "7"],
            options: [:],
            index: 1,
            expected: ["NODE_APP_INSTANCE": "7"]
        ),
        EnvironmentCase(
            name: "a base read as a JavaScript number (hex, spaces)",
            env: ["Q": " 0x10 "],
            options: ["increment_var": .string("Q")],
            index: 1,
            expected: ["Q": "17"]
        ),
        EnvironmentCase(name: "a fractional base", env: ["X": "2.5"], options: ["increment_var": .string("X")], index: 1, expected: ["X": "3.5"]),
        EnvironmentCase(
            name: "increment_var and instance_var naming one variable: the increment wins",
            env: ["X": "2.5"],
            options: ["increment_var": .string("X"), "instance_var": .string("X")],
            index: 1,
            expected: ["X": "3.5"]
        ),
        EnvironmentCase(
            name: "a base that is not a number counts from 0",
            env: ["PORT": "abc"],
            options: ["increment_var": .string("PORT")],
            index: 1,
            expected: ["PORT": "1"]
        ),
        EnvironmentCase(
            name: "a variable the env lacks counts from 0",
            env: [:],
            options: ["increment_var": .string("PORT")],
            index: 1,
            expected: ["PORT": "1"]
        ),
        EnvironmentCase(name: "a negative base", env: ["N": "-5"], options: ["increment_var": .string("N")], index: 2, expected: ["N": "-3"]),
        EnvironmentCase(
            name: "a base too large for exact sums stays as JavaScript writes it",
            env: ["B": "1e21"],
            options: ["increment_var": .string("B")],
            index: 1,
            expected: ["B": "1e+21"]
        ),
        EnvironmentCase(
            name: "an empty increment_var is none (PM2 tests it for truth)",
            env: ["PORT": "4000"],
            options: ["increment_var": .string("")],
            index: 1,
            expected: ["PORT": "4000", "NODE_APP_INSTANCE": "1"]
        ),
        EnvironmentCase(
            name: "an instance_var that cannot be an env name sets nothing",
            env: [:],
            options: ["instance_var": .string("A=B")],
            index: 1,
            expected: ["A": nil, "NODE_APP_INSTANCE": nil]
        ),
    ]

    @Test("instance_var and increment_var give each instance what PM2 7 gives it", arguments: environmentCases)
    func environment(_ row: EnvironmentCase) {
        var spec = BuiltinSupervisorPartsTests.spec { $0.env = row.env }
        spec.pm2Options = row.options
        let env = spec.environment(instance: row.index)
        for (name, value) in row.expected {
            #expect(env[name] == value, "\(name)")
        }
    }

    /// A release the schema accepts must run on the builtin supervisor too: it refused kill_timeout above 10 minutes
    /// and more than 256 instances, which a signed release may ask for (so it never deployed on builtin hosts).
    struct LimitCase: Sendable, CustomTestStringConvertible {
        let name: String
        let instances: Int
        let killTimeoutMilliseconds: Int64
        let accepted: Bool
        var testDescription: String { name }
    }

    static let limitCases: [LimitCase] = [
        LimitCase(name: "1024 instances", instances: 1024, killTimeoutMilliseconds: 1600, accepted: true),
        LimitCase(name: "1025 instances", instances: 1025, killTimeoutMilliseconds: 1600, accepted: false),
        LimitCase(name: "257 instances", instances: 257, killTimeoutMilliseconds: 1600, accepted: true),
        LimitCase(name: "kill_timeout of one hour", instances: 1, killTimeoutMilliseconds: 3_600_000, accepted: true),
        LimitCase(name: "kill_timeout of one hour and 1 ms", instances: 1, killTimeoutMilliseconds: 3_600_001, accepted: false),
        LimitCase(name: "kill_timeout of 10 minutes and 1 ms", instances: 1, killTimeoutMilliseconds: 600_001, accepted: true),
        LimitCase(name: "kill_timeout 0", instances: 1, killTimeoutMilliseconds: 0, accepted: true),
    ]

    @Test("the release schema and the builtin supervisor accept the same instances and kill_timeout", arguments: limitCases)
    func limitsAgree(_ row: LimitCase) throws {
        let json = JSONValue.object([
            "name": .string("api"), "script": .string("server.js"),
            "instances": .integer(Int64(row.instances)), "kill_timeout": .integer(row.killTimeoutMilliseconds),
        ])
        let schemaAccepts = (try? PM2App(json: json, path: "pm2.apps[0]")) != nil
        let spec = BuiltinSupervisorPartsTests.spec {
            $0.instances = row.instances
            $0.killTimeoutMilliseconds = row.killTimeoutMilliseconds
        }
        let supervisorAccepts = (try? spec.validateForSupervisor()) != nil
        #expect(schemaAccepts == row.accepted, "release schema")
        #expect(supervisorAccepts == row.accepted, "builtin supervisor")
    }
}
