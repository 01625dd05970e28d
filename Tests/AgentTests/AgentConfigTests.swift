import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

@Suite("AgentConfig: JSON or YAML file, defaults, environment overrides, validation")
struct AgentConfigTests {
    /// Writes `text` as `name` in a fresh temp dir, loads it with `environment`, and removes the dir.
    static func load(_ text: String, name: String = "agent.yaml", environment: [String: String] = [:]) throws -> AgentConfig {
        let directory = try TestPaths.makeTemporaryDirectory("ferry-config")
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent(name).path
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        return try AgentConfig.load(from: path, environment: environment)
    }

    static let fullYAML = """
        # Written by ferry-agent enroll
        ---
        controller: "https://ferry.internal:8443"
        agentId: agent-7f3a   # issued at enrollment
        tokenFile: /var/lib/ferry/agent.token
        services:
          - api
          - web-frontend
        trustedKeys: ['/etc/ferry/keys/alice.pub', "/etc/ferry/keys/bob.pub"]
        threshold: 2
        stateDir: /var/lib/ferry
        envDir: /etc/ferry/env
        pollSeconds: 20
        longPollSeconds: 45
        reportSeconds: 60
        processManager: builtin
        caFile: /etc/ferry/ca.pem
        pm2: /usr/local/bin/pm2
        pm2Home: /home/deploy/.pm2
        pm2TableSource: jlist
        namespace: ferry-prod
        clockSkewSeconds: 120
        keepReleases: 5
        logMaxBytes: 52428800
        logKeep: 7
        machineIdentity: ec2
        machineIdFile: /run/host/machine-id
        instanceMetadataUrl: "http://[fd00:ec2::254]"
        """

    static let fullJSON = """
        {
          "controller": "https://ferry.internal:8443", "agentId": "agent-7f3a", "tokenFile": "/var/lib/ferry/agent.token",
          "services": ["api", "web-frontend"], "trustedKeys": ["/etc/ferry/keys/alice.pub", "/etc/ferry/keys/bob.pub"],
          "threshold": 2, "stateDir": "/var/lib/ferry", "envDir": "/etc/ferry/env", "pollSeconds": 20, "longPollSeconds": 45,
          "reportSeconds": 60, "processManager": "builtin", "caFile": "/etc/ferry/ca.pem", "pm2": "/usr/local/bin/pm2",
          "pm2Home": "/home/deploy/.pm2", "pm2TableSource": "jlist", "namespace": "ferry-prod", "clockSkewSeconds": 120, "keepReleases": 5,
          "logMaxBytes": 52428800, "logKeep": 7, "machineIdentity": "ec2", "machineIdFile": "/run/host/machine-id", "instanceMetadataUrl": "http://[fd00:ec2::254]"
        }
        """

    static let minimalYAML = """
        controller: http://127.0.0.1:8080
        agentId: a1
        services:
        - api
        trustedKeys:
        - /etc/ferry/keys/alice.pub
        """

    @Test func theSameConfigAsJSONAndAsYAMLIsTheSameValue() throws {
        let yaml = try Self.load(Self.fullYAML)
        let json = try Self.load(Self.fullJSON, name: "agent.json")
        #expect(yaml == json)
        #expect(yaml.controllerURL == "https://ferry.internal:8443")
        #expect(yaml.agentID == "agent-7f3a")
        #expect(yaml.services == ["api", "web-frontend"])
        #expect(yaml.trustedKeys == ["/etc/ferry/keys/alice.pub", "/etc/ferry/keys/bob.pub"])
        #expect(yaml.threshold == 2)
        #expect(yaml.pollSeconds == 20)
        #expect(yaml.longPollSeconds == 45)
        #expect(yaml.reportSeconds == 60)
        #expect(yaml.processManager == .builtin)
        #expect(yaml.caFile == "/etc/ferry/ca.pem")
        #expect(yaml.pm2Path == "/usr/local/bin/pm2")
        #expect(yaml.pm2Home == "/home/deploy/.pm2")
        #expect(yaml.pm2TableSource == .jlist)
        #expect(yaml.namespace == "ferry-prod")
        #expect(yaml.clockSkewSeconds == 120)
        #expect(yaml.keepReleases == 5)
        #expect(yaml.logMaxBytes == 50 << 20)
        #expect(yaml.logKeep == 7)
        #expect(yaml.machineIdentity == .ec2)
        #expect(yaml.machineIDFile == "/run/host/machine-id")
        #expect(yaml.instanceMetadataURL == "http://[fd00:ec2::254]")
    }

    @Test func theFileEnrollWritesReadsBackToTheSameValue() throws {
        let config = try Self.load(Self.fullYAML)
        let written = String(decoding: config.json.encoded(), as: UTF8.self)
        #expect(try Self.load(written, name: "agent.json") == config)
        // A JSON file is recognised by its first non-blank character, whatever the file is called.
        #expect(try Self.load("\n  \t" + written, name: "agent.conf") == config)
        // Also after a CRLF line (a file edited on Windows): "\r\n" is one Character in Swift.
        #expect(try Self.load("\r\n" + written.replacingOccurrences(of: ",", with: ",\r\n"), name: "agent.conf") == config)
    }

    /// The machine check's keys are written only when they differ from their defaults, so an instance that keeps the
    /// defaults can go back to an agent binary from before them (which refuses unknown keys).
    @Test func theMachineCheckKeysAreWrittenOnlyWhenSet() throws {
        let defaults = try Self.load(Self.minimalYAML)
        guard case .object(let written) = defaults.json else { throw HarnessError("the written config is not an object") }
        for key in ["machineIdentity", "machineIdFile", "instanceMetadataUrl", "logMaxBytes", "logKeep"] {
            #expect(written[key] == nil, "\(key) with its default value")
        }
        #expect(try Self.load(String(decoding: defaults.json.encoded(), as: UTF8.self), name: "agent.json") == defaults)
        guard case .object(let set) = try Self.load(Self.fullYAML).json else { throw HarnessError("the written config is not an object") }
        #expect(set["machineIdentity"] == .string("ec2"))
        #expect(set["machineIdFile"] == .string("/run/host/machine-id"))
        #expect(set["instanceMetadataUrl"] == .string("http://[fd00:ec2::254]"))
        #expect(set["logMaxBytes"] == .integer(50 << 20))
        #expect(set["logKeep"] == .integer(7))
    }

    @Test func defaults() throws {
        let config = try Self.load(Self.minimalYAML)
        #expect(config.threshold == 1)
        #expect(config.stateDir == "/var/lib/ferry")
        #expect(config.tokenFile == "/var/lib/ferry/agent.token")
        #expect(config.envDir == "/etc/ferry/env")
        #expect(config.pollSeconds == 15)
        #expect(config.longPollSeconds == 30)
        #expect(config.reportSeconds == 30)
        #expect(config.driftCheckSeconds == 5)
        #expect(config.processManager == .auto)
        #expect(config.caFile == nil)
        #expect(config.pm2Path == nil)
        #expect(config.pm2Home == nil)
        #expect(config.pm2TableSource == .socket)
        #expect(config.namespace == "ferry")
        #expect(config.clockSkewSeconds == 300)
        #expect(config.keepReleases == 3)
        #expect(config.logMaxBytes == 10 << 20)
        #expect(config.logKeep == 3)
        #expect(config.machineIdentity == .machineID)
        #expect(config.machineIDFile == "/etc/machine-id")
        #expect(config.instanceMetadataURL == "http://169.254.169.254")
        // The token file follows a stateDir given in the file; null is the same as absent.
        let moved = try Self.load(Self.minimalYAML + "\nstateDir: /srv/ferry\ncaFile: null\nthreshold: ~\n")
        #expect(moved.tokenFile == "/srv/ferry/agent.token")
        #expect(moved.caFile == nil)
        #expect(moved.threshold == 1)
    }

    @Test func environmentOverridesTheFile() throws {
        let environment = [
            "FERRY_CONTROLLER_URL": "https://other.internal", "FERRY_POLL_SECONDS": "90", "FERRY_PROCESS_MANAGER": "pm2",
            "FERRY_STATE_DIR": "/srv/state", "FERRY_ENV_DIR": "/srv/env", "FERRY_CA_FILE": "/srv/ca.pem", "FERRY_PM2": "/opt/pm2",
            "FERRY_PM2_HOME": "/srv/pm2home", "UNRELATED": "x",
        ]
        let config = try Self.load(Self.fullYAML, environment: environment)
        #expect(config.controllerURL == "https://other.internal")
        #expect(config.pollSeconds == 90)
        #expect(config.processManager == .pm2)
        #expect(config.stateDir == "/srv/state")
        #expect(config.envDir == "/srv/env")
        #expect(config.caFile == "/srv/ca.pem")
        #expect(config.pm2Path == "/opt/pm2")
        #expect(config.pm2Home == "/srv/pm2home")
        // Everything else stays as the file says.
        #expect(config.agentID == "agent-7f3a")
        #expect(config.threshold == 2)

        // An empty variable is not an override.
        let unchanged = try Self.load(
            Self.fullYAML,
            environment: ["FERRY_CONTROLLER_URL": "", "FERRY_POLL_SECONDS": "", "FERRY_PROCESS_MANAGER": ""]
        )
        #expect(unchanged == (try Self.load(Self.fullYAML)))
    }

    struct Hostile: Sendable, CustomStringConvertible {
        var description: String
        var text: String
        var name = "agent.yaml"
        var environment: [String: String] = [:]
        /// The error's reason (after `config <path>: `), exactly.
        var reason: String
    }

    /// `minimalYAML` with `line` appended.
    static func plus(_ line: String) -> String { minimalYAML + "\n" + line + "\n" }

    /// A minimal JSON config with `key` set to the JSON text `literal` (numbers as written, however large).
    static func json(_ key: String, _ literal: String) -> String {
        #"{"controller":"http://127.0.0.1:8080","agentId":"a1","services":["api"],"trustedKeys":["/k.pub"],"\#(key)":\#(literal)}"#
    }

    /// The refusal of a plain-HTTP controller URL that is not loopback.
    static func insecure(_ url: String, host: String) -> String {
        "controller: \(url) is plain HTTP to \(host), which is not a loopback address: the agent token, the releases and the "
            + "status reports would cross the network unencrypted. Use an https:// URL (with --ca-file for a private CA), or, "
            + "on a network you trust (a TLS-terminating proxy on the same host, a private link), allow it explicitly: enroll "
            + "with --allow-insecure-http, or set allowInsecureHttp: true in the config, or FERRY_ALLOW_INSECURE_HTTP=1"
    }

    static let hostile: [Hostile] = [
        Hostile(description: "unknown key (a typo)", text: plus("pollSecs: 5"), reason: "pollSecs: unknown field"),
        Hostile(description: "wrong type", text: plus("threshold: two"), reason: "threshold: expected integer, got string"),
        Hostile(description: "fractional number", text: plus("pollSeconds: 1.5"), reason: "pollSeconds: expected integer, got a fractional number"),
        Hostile(
            description: "bad service name",
            text: minimalYAML.replacingOccurrences(of: "- api", with: "- API"),
            reason: "services[0]: \"API\" must match ^[a-z0-9][a-z0-9-]{0,62}$"
        ),
        Hostile(
            description: "services not a list",
            text: plus("").replacingOccurrences(of: "services:\n- api", with: "services: api"),
            reason: "services: expected list, got string"
        ),
        Hostile(
            description: "missing agentId",
            text: minimalYAML.replacingOccurrences(of: "agentId: a1\n", with: ""),
            reason: "agentId: required field is missing"
        ),
        Hostile(
            description: "no service",
            text: minimalYAML.replacingOccurrences(of: "services:\n- api", with: "services: []"),
            reason: "services: at least one service is required"
        ),
        Hostile(description: "threshold above the key count", text: plus("threshold: 2"), reason: "threshold: 2 is more than the 1 trusted key(s)"),
        Hostile(
            description: "threshold counts distinct keys, not entries",
            text: minimalYAML + "\n- /etc/ferry/keys/alice.pub\nthreshold: 2\n",
            reason: "threshold: 2 is more than the 1 trusted key(s)"
        ),
        Hostile(description: "relative stateDir", text: plus("stateDir: var/lib/ferry"), reason: "stateDir: must be an absolute path"),
        Hostile(
            description: "both a trust root and trusted keys",
            text: plus("trustRoot: /etc/ferry/root-1.json"),
            reason: "trustRoot: give either trustRoot or trustedKeys, not both: the root names the keys (/etc/ferry/root-1.json)"
        ),
        Hostile(
            description: "neither a trust root nor trusted keys",
            text: #"{"controller":"http://127.0.0.1:8080","agentId":"a1","services":["api"],"trustedKeys":[]}"#,
            reason: "trustedKeys: at least one trusted key is required (or a signed root as trustRoot)"
        ),
        Hostile(description: "trust root not a string", text: plus("trustRoot: [a, b]"), reason: "trustRoot: expected string, got array"),

        Hostile(
            description: "non-http controller",
            text: minimalYAML.replacingOccurrences(of: "http://127.0.0.1:8080", with: "ftp://ferry.internal"),
            reason: "controller: \"ftp://ferry.internal\" must be an http:// or https:// URL"
        ),
        Hostile(
            description: "bad machineIdentity",
            text: plus("machineIdentity: hostname"),
            reason: "machineIdentity: \"hostname\" must be one of machine-id, ec2, none"
        ),
        Hostile(
            description: "relative machineIdFile",
            text: plus("machineIdFile: etc/machine-id"),
            reason: "machineIdFile: must be an absolute path"
        ),
        Hostile(
            description: "instanceMetadataUrl not http",
            text: plus("instanceMetadataUrl: 169.254.169.254"),
            reason: "instanceMetadataUrl: \"169.254.169.254\" must be an http:// or https:// URL"
        ),
        Hostile(
            description: "bad pm2TableSource",
            text: plus("pm2TableSource: rpc"),
            reason: "pm2TableSource: \"rpc\" must be one of socket, jlist"
        ),
        Hostile(
            description: "pm2TableSource not a string",
            text: plus("pm2TableSource: true"),
            reason: "pm2TableSource: expected string, got boolean"
        ),
        Hostile(
            description: "bad processManager",
            text: plus("processManager: systemd"),
            reason: "processManager: \"systemd\" must be auto, pm2 or builtin"
        ),
        Hostile(description: "pollSeconds out of range", text: plus("pollSeconds: 0"), reason: "pollSeconds: 0 is outside 1...3600"),
        Hostile(description: "longPollSeconds above 60", text: plus("longPollSeconds: 61"), reason: "longPollSeconds: 61 is outside 0...60"),
        Hostile(
            description: "YAML tab indentation",
            text: "controller: http://x\nservices:\n\t- api\n",
            reason: "line 3: tabs are not allowed for indentation"
        ),
        Hostile(
            description: "YAML anchor",
            text: plus("envDir: &dir /etc/ferry/env"),
            reason: "line 7: YAML feature '&' is not supported in Ferry config files"
        ),
        Hostile(description: "YAML alias", text: plus("envDir: *dir"), reason: "line 7: YAML feature '*' is not supported in Ferry config files"),
        Hostile(description: "unterminated quote", text: plus("envDir: \"/etc/ferry/env"), reason: "line 7: unterminated quoted string"),
        Hostile(description: "duplicate key", text: plus("agentId: a2"), reason: "line 7: duplicate key \"agentId\""),
        Hostile(
            description: "block scalar",
            text: plus("caFile: |\n  -----BEGIN CERTIFICATE-----"),
            reason: "line 7: YAML feature '|' is not supported in Ferry config files"
        ),
        Hostile(
            description: "several documents",
            text: plus("---\nagentId: a2"),
            reason: "line 7: several YAML documents in one file are not supported"
        ),
        Hostile(
            description: "bad FERRY_POLL_SECONDS",
            text: minimalYAML,
            environment: ["FERRY_POLL_SECONDS": "15s"],
            reason: "FERRY_POLL_SECONDS: \"15s\" must be a number of seconds between 1 and 3600"
        ),
        Hostile(
            description: "FERRY_POLL_SECONDS out of range",
            text: minimalYAML,
            environment: ["FERRY_POLL_SECONDS": "0"],
            reason: "FERRY_POLL_SECONDS: \"0\" must be a number of seconds between 1 and 3600"
        ),
        Hostile(
            description: "bad FERRY_PROCESS_MANAGER",
            text: minimalYAML,
            environment: ["FERRY_PROCESS_MANAGER": "docker"],
            reason: "FERRY_PROCESS_MANAGER: \"docker\" must be auto, pm2 or builtin"
        ),
        Hostile(
            description: "FERRY_CONTROLLER_URL is validated too",
            text: minimalYAML,
            environment: ["FERRY_CONTROLLER_URL": "ferry.internal"],
            reason: "controller: \"ferry.internal\" must be an http:// or https:// URL"
        ),
        Hostile(description: "malformed JSON", text: "{\"controller\": ", name: "agent.json", reason: "malformed JSON"),
        // Transport: plain HTTP only on loopback unless allowed.
        Hostile(
            description: "plain HTTP to a remote host",
            text: minimalYAML.replacingOccurrences(of: "http://127.0.0.1:8080", with: "http://ferry.internal:8080"),
            reason: insecure("http://ferry.internal:8080", host: "ferry.internal")
        ),
        Hostile(
            description: "plain HTTP to a private IPv4 address",
            text: minimalYAML.replacingOccurrences(of: "http://127.0.0.1:8080", with: "http://10.0.0.5"),
            reason: insecure("http://10.0.0.5", host: "10.0.0.5")
        ),
        Hostile(
            description: "a host that only starts like loopback",
            text: minimalYAML.replacingOccurrences(of: "http://127.0.0.1:8080", with: "http://127.0.0.1.example.com/"),
            reason: insecure("http://127.0.0.1.example.com/", host: "127.0.0.1.example.com")
        ),
        Hostile(
            description: "loopback in the user info does not count",
            text: minimalYAML.replacingOccurrences(of: "http://127.0.0.1:8080", with: "http://127.0.0.1@ferry.internal"),
            reason: insecure("http://ferry.internal", host: "ferry.internal")  // the user info is not shown
        ),
        Hostile(
            description: "FERRY_CONTROLLER_URL to a remote host over HTTP",
            text: minimalYAML,
            environment: ["FERRY_CONTROLLER_URL": "http://[2001:db8::1]:8080"],
            reason: insecure("http://[2001:db8::1]:8080", host: "2001:db8::1")
        ),
        Hostile(
            description: "FERRY_ALLOW_INSECURE_HTTP=false does not allow it",
            text: minimalYAML.replacingOccurrences(of: "http://127.0.0.1:8080", with: "http://ferry.internal"),
            environment: ["FERRY_ALLOW_INSECURE_HTTP": "false"],
            reason: insecure("http://ferry.internal", host: "ferry.internal")
        ),
        Hostile(
            description: "bad FERRY_ALLOW_INSECURE_HTTP",
            text: minimalYAML,
            environment: ["FERRY_ALLOW_INSECURE_HTTP": "sure"],
            reason: "FERRY_ALLOW_INSECURE_HTTP: \"sure\" must be 1, true, yes, 0, false or no"
        ),
        Hostile(
            description: "allowInsecureHttp not a boolean",
            text: plus("allowInsecureHttp: 1"),
            reason: "allowInsecureHttp: expected boolean, got number"
        ),
        // Overflow: every number of the config, as large as JSON can write it.
        Hostile(description: "threshold huge", text: json("threshold", "1e300"), name: "agent.json", reason: "threshold: 1e+300 is outside 1...64"),
        Hostile(
            description: "pollSeconds past Int64",
            text: json("pollSeconds", "99999999999999999999"),
            name: "agent.json",
            reason: "pollSeconds: 1e+20 is outside 1...3600"
        ),
        Hostile(
            description: "longPollSeconds at Int64.max",
            text: json("longPollSeconds", "9223372036854775807"),
            name: "agent.json",
            reason: "longPollSeconds: 9223372036854775807 is outside 0...60"
        ),
        Hostile(
            description: "reportSeconds huge",
            text: json("reportSeconds", "1e300"),
            name: "agent.json",
            reason: "reportSeconds: 1e+300 is outside 1...3600"
        ),
        Hostile(
            description: "driftCheckSeconds zero",
            text: json("driftCheckSeconds", "0"),
            name: "agent.json",
            reason: "driftCheckSeconds: 0 is outside 1...3600"
        ),
        Hostile(
            description: "driftCheckSeconds past Int64",
            text: json("driftCheckSeconds", "99999999999999999999"),
            name: "agent.json",
            reason: "driftCheckSeconds: 1e+20 is outside 1...3600"
        ),
        Hostile(
            description: "pm2TimeoutSeconds negative past Int64",
            text: json("pm2TimeoutSeconds", "-99999999999999999999"),
            name: "agent.json",
            reason: "pm2TimeoutSeconds: -1e+20 is outside 1...3600"
        ),
        Hostile(
            description: "clockSkewSeconds huge",
            text: json("clockSkewSeconds", "1e300"),
            name: "agent.json",
            reason: "clockSkewSeconds: 1e+300 is outside 0...86400"
        ),
        Hostile(
            description: "keepReleases at Int64.min",
            text: json("keepReleases", "-9223372036854775808"),
            name: "agent.json",
            reason: "keepReleases: -9223372036854775808 is outside 0...100"
        ),
        Hostile(
            description: "logMaxBytes below a kilobyte",
            text: json("logMaxBytes", "500"),
            name: "agent.json",
            reason: "logMaxBytes: 500 must be 0 (the agent leaves PM2's logs alone) or at least 1024"
        ),
        Hostile(
            description: "logMaxBytes past a tebibyte",
            text: json("logMaxBytes", "9223372036854775807"),
            name: "agent.json",
            reason: "logMaxBytes: 9223372036854775807 is outside 0...1099511627776"
        ),
        Hostile(
            description: "logKeep negative",
            text: json("logKeep", "-1"),
            name: "agent.json",
            reason: "logKeep: -1 is outside 0...100"
        ),
        Hostile(
            description: "FERRY_POLL_SECONDS past Int64",
            text: minimalYAML,
            environment: ["FERRY_POLL_SECONDS": "99999999999999999999"],
            reason: "FERRY_POLL_SECONDS: \"99999999999999999999\" must be a number of seconds between 1 and 3600"
        ),
        Hostile(
            description: "duplicate key in a JSON config",
            text: #"{"controller":"http://127.0.0.1:8080","agentId":"a1","agentId":"a2"}"#,
            name: "agent.json",
            reason: #"malformed JSON: duplicate key "agentId" in one object at byte 53"#
        ),
        Hostile(
            description: "a service named twice (every status report would be refused)",
            text: minimalYAML.replacingOccurrences(of: "- api", with: "- api\n- web\n- api"),
            reason: "services[2]: api is already services[0]"
        ),
        Hostile(
            description: "PM2's default namespace (Ferry would remove the host's other apps)",
            text: plus("namespace: default"),
            reason: "namespace: \"default\" is PM2's own (every app started without a namespace is in default): Ferry would remove the "
                + "host's other apps; choose a namespace of Ferry's own, such as ferry"
        ),
        Hostile(
            description: "PM2's all",
            text: plus("namespace: all"),
            reason: "namespace: \"all\" is PM2's own (every app started without a namespace is in default): Ferry would remove the "
                + "host's other apps; choose a namespace of Ferry's own, such as ferry"
        ),
        Hostile(
            description: "an empty namespace",
            text: plus("namespace: ''"),
            reason: "namespace: \"\" must not be empty nor hold spaces, control characters or /"
        ),
        Hostile(
            description: "a namespace with a space",
            text: plus("namespace: my apps"),
            reason: "namespace: \"my apps\" must not be empty nor hold spaces, control characters or /"
        ),
        Hostile(
            description: "a controller URL with credentials is not quoted with them",
            text: minimalYAML.replacingOccurrences(of: "http://127.0.0.1:8080", with: "ftp://ops:hunter2@ferry.internal"),
            reason: "controller: \"ftp://ferry.internal\" must be an http:// or https:// URL"
        ),
        Hostile(
            description: "a controller URL with a space (no request could carry it)",
            text: minimalYAML.replacingOccurrences(of: "http://127.0.0.1:8080", with: "'https://ferry.internal /'"),
            reason: "controller: \"https://ferry.internal /\" contains spaces or control characters"
        ),
        Hostile(description: "empty file", text: "# nothing here\n", reason: "document: expected object, got null"),
        Hostile(description: "a list at the top", text: "- api\n", reason: "document: expected object, got array"),
    ]

    @Test(arguments: hostile)
    func refuses(_ testCase: Hostile) throws {
        let directory = try TestPaths.makeTemporaryDirectory("ferry-config")
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent(testCase.name).path
        try Data(testCase.text.utf8).write(to: URL(fileURLWithPath: path))
        let error = try #require(throws: AgentConfig.ConfigError.self) {
            try AgentConfig.load(from: path, environment: testCase.environment)
        }
        #expect(error.path == path)
        if testCase.reason == "malformed JSON" {
            #expect(error.reason.hasPrefix("malformed JSON: "), "\(error)")
        } else {
            #expect(error.reason == testCase.reason)
        }
        #expect(error.description == "config \(path): \(error.reason)")
    }

    @Test(
        "plain HTTP is accepted on loopback, or anywhere when allowed",
        arguments: [
            ("http://127.0.0.1:8080", [:]),
            ("http://127.9.8.7", [:]),
            ("http://localhost:8080/", [:]),
            ("http://[::1]:8080", [:]),
            ("http://[::ffff:127.0.0.1]:8080", [:]),
            ("https://ferry.internal:8443", [:]),
            ("http://ferry.internal:8080", ["FERRY_ALLOW_INSECURE_HTTP": "1"]),
            ("http://10.0.0.5", ["FERRY_ALLOW_INSECURE_HTTP": "yes"]),
        ] as [(String, [String: String])]
    )
    func plainHTTPAllowed(_ url: String, _ environment: [String: String]) throws {
        let config = try Self.load(Self.minimalYAML.replacingOccurrences(of: "http://127.0.0.1:8080", with: url), environment: environment)
        #expect(config.controllerURL == url)
    }

    @Test func allowInsecureHttpInTheFileIsReadAndWrittenBack() throws {
        let text =
            Self.minimalYAML.replacingOccurrences(of: "http://127.0.0.1:8080", with: "http://ferry.internal:8080") + "\nallowInsecureHttp: true\n"
        let config = try Self.load(text)
        #expect(config.allowInsecureHttp)
        let again = try Self.load(String(decoding: config.json.encoded(), as: UTF8.self), name: "agent.json")
        #expect(again == config)
    }

    /// A token file saved with CRLF line ends (an editor on another system, a secret store's export): "\r\n" is one
    /// `Character` in Swift, which a trim by characters kept, so the token read was "...\r\n" and every request failed.
    /// A byte order mark before the document (PowerShell 5, older Notepad) is not part of it: the JSON file was read as
    /// YAML and refused at line 1, the YAML file's first key was `\u{FEFF}controller`.
    @Test(arguments: ["agent.yaml", "agent.json"])
    func aByteOrderMarkIsNotPartOfTheDocument(_ name: String) throws {
        let text = name.hasSuffix(".json") ? Self.fullJSON : Self.fullYAML
        let plain = try Self.load(text, name: name)
        #expect(try Self.load("\u{FEFF}" + text, name: name) == plain)
        #expect(try Self.load("\u{FEFF}" + text.replacingOccurrences(of: "\n", with: "\r\n"), name: name) == plain)
    }

    /// A token file other users can read is said at start (it lets them act as this agent); one only its owner reads is
    /// not. An upper-case scheme is a URL like any other.
    @Test(arguments: [(0o600, false), (0o644, true), (0o640, true), (0o400, false)] as [(mode_t, Bool)])
    func aTokenFileOthersCanReadIsSaid(_ mode: mode_t, _ said: Bool) throws {
        try TestPaths.withTemporaryDirectorySync("ferry-token-mode") { directory in
            let token = directory.appendingPathComponent("agent.token").path
            try Data("fyt_x\n".utf8).write(to: URL(fileURLWithPath: token))
            #expect(chmod(token, mode) == 0)
            let config = try Self.load(Self.minimalYAML.replacingOccurrences(of: "http://", with: "HTTP://") + "\ntokenFile: \(token)\n")
            let problem = config.tokenFileExposure()
            #expect((problem != nil) == said, "\(problem ?? "nothing said")")
            if said { #expect(problem?.contains("chmod 600") == true) }
        }
    }

    @Test func aTokenFileWithCRLFReadsTheToken() throws {
        try TestPaths.withTemporaryDirectorySync { directory in
            let tokens = ["fya_0123456789abcdef\r\n", " fya_0123456789abcdef\r\n\r\n", "fya_0123456789abcdef\n", "\r\nfya_0123456789abcdef\t\r\n"]
            for (index, text) in tokens.enumerated() {
                let file = directory.appendingPathComponent("agent-\(index).token").path
                try text.write(toFile: file, atomically: true, encoding: .utf8)
                let config = AgentConfig(controllerURL: "http://127.0.0.1:1", agentID: "a", tokenFile: file, services: ["api"], trustedKeys: [])
                #expect(try config.token() == "fya_0123456789abcdef", "\(text.debugDescription)")
            }
        }
    }

    /// The root file is read again at every start, from a path anyone who can write there controls: a file that is
    /// not the one enrolled (its digest is in the config) is refused, not pinned.
    @Test func aTrustRootFileReplacedSinceEnrollmentIsRefused() throws {
        try TestPaths.withTemporaryDirectorySync { directory in
            let rootFile = directory.appendingPathComponent("root-1.json")
            let signer = try SigningKey.generate()
            let own = try TestRoots.root(version: 1, rootKeys: [signer], releaseKeys: [signer], signers: [signer])
            try Data(own.encoded()).write(to: rootFile)
            let text = """
                controller: http://127.0.0.1:8080
                agentId: a1
                services:
                - api
                trustRoot: \(rootFile.path)
                stateDir: \(directory.path)
                """
            let config = try Self.load(text)
            // Enrolled before the pin existed: read unchecked.
            #expect(try config.pinnedRoot().version == 1)
            try TrustPin(trustRootSHA256: SHA256.hash(Array(own.encoded()))).write(stateDir: directory.path)
            #expect(try config.pinnedRoot().version == 1)
            // The config itself does not name the pin (an older agent binary refuses fields it does not know).
            guard case .object(let fields) = config.json else { throw HarnessError("the config is not an object") }
            #expect(!fields.keys.contains { $0.lowercased().contains("sha") }, "\(fields.keys.sorted())")

            let other = try SigningKey.generate()
            try Data(try TestRoots.root(version: 1, rootKeys: [other], releaseKeys: [other], signers: [other]).encoded()).write(to: rootFile)
            let error = try #require(throws: AgentConfig.ConfigError.self) { try config.pinnedRoot() }
            #expect(error.description.contains("the trust root file changed since enrollment"), "\(error)")
        }
    }

    /// The same for trusted key files: a key that is not one of those enrolled is refused.
    @Test func aTrustedKeyFileReplacedSinceEnrollmentIsRefused() throws {
        try TestPaths.withTemporaryDirectorySync { directory in
            let keyFile = directory.appendingPathComponent("alice.pub")
            let alice = try SigningKey.generate().publicKey
            try Data(try alice.pemRepresentation().utf8).write(to: keyFile)
            let text = """
                controller: http://127.0.0.1:8080
                agentId: a1
                services:
                - api
                trustedKeys:
                - \(keyFile.path)
                stateDir: \(directory.path)
                """
            let config = try Self.load(text)
            try TrustPin(trustedKeyIDs: [alice.keyID]).write(stateDir: directory.path)
            #expect(try config.pinnedRoot().root.releaseRole.keyIDs == [alice.keyID])

            try Data(try SigningKey.generate().publicKey.pemRepresentation().utf8).write(to: keyFile)
            let error = try #require(throws: AgentConfig.ConfigError.self) { try config.pinnedRoot() }
            #expect(error.description.contains("the trusted key file changed since enrollment"), "\(error)")
        }
    }

    /// The keys and threshold enrolled with are root 1, from which every root accepted since is verified again: a key
    /// taken out of the list, or another threshold, is refused (it set the stored chain aside, and a key a later root
    /// had revoked was trusted again). The same keys in another order are the same root.
    @Test(arguments: [
        (keys: ["alice", "bob"], threshold: 1, refused: nil as String?),
        (keys: ["bob", "alice"], threshold: 1, refused: nil),
        (keys: ["alice"], threshold: 1, refused: "the agent enrolled with is no longer listed"),
        (keys: ["bob"], threshold: 1, refused: "the agent enrolled with is no longer listed"),
        (keys: ["alice", "bob"], threshold: 2, refused: "is not the threshold the agent enrolled with (1)"),
        (keys: ["alice", "carol"], threshold: 1, refused: "the trusted key file changed since enrollment"),
    ])
    func theKeysAndThresholdMustBeTheOnesEnrolledWith(_ row: (keys: [String], threshold: Int, refused: String?)) throws {
        try TestPaths.withTemporaryDirectorySync { directory in
            var files: [String: String] = [:]
            var ids: [String: String] = [:]
            for name in ["alice", "bob", "carol"] {
                let key = try SigningKey.generate().publicKey
                let file = directory.appendingPathComponent("\(name).pub").path
                try Data(try key.pemRepresentation().utf8).write(to: URL(fileURLWithPath: file))
                files[name] = file
                ids[name] = key.keyID
            }
            try TrustPin(trustedKeyIDs: [ids["alice"] ?? "", ids["bob"] ?? ""], threshold: 1).write(stateDir: directory.path)
            let text = """
                controller: http://127.0.0.1:8080
                agentId: a1
                services:
                - api
                trustedKeys:
                \(row.keys.map { "- \(files[$0] ?? "")" }.joined(separator: "\n"))
                threshold: \(row.threshold)
                stateDir: \(directory.path)
                """
            let config = try Self.load(text)
            if let refused = row.refused {
                let error = try #require(throws: AgentConfig.ConfigError.self) { try config.pinnedRoot() }
                #expect(error.description.contains(refused), "\(error)")
            } else {
                #expect(Set(try config.pinnedRoot().root.releaseRole.keyIDs) == [ids["alice"] ?? "", ids["bob"] ?? ""])
            }
        }
    }

    @Test func aMissingFileAndAnOversizedFileAreRefused() throws {
        try TestPaths.withTemporaryDirectorySync { directory in
            let missing = directory.appendingPathComponent("nope.yaml").path
            let error = try #require(throws: AgentConfig.ConfigError.self) { try AgentConfig.load(from: missing, environment: [:]) }
            #expect(error.description == "config \(missing): no such file")

            let big = directory.appendingPathComponent("big.yaml").path
            try Data(Self.minimalYAML.utf8 + Array(repeating: UInt8(ascii: "#"), count: 1 << 20)).write(to: URL(fileURLWithPath: big))
            let tooBig = try #require(throws: AgentConfig.ConfigError.self) { try AgentConfig.load(from: big, environment: [:]) }
            #expect(tooBig.description == "config \(big): larger than 1 MiB")

            // A device that never ends (or a log named by mistake) is refused after 1 MiB, not read whole.
            let endless = try #require(throws: AgentConfig.ConfigError.self) { try AgentConfig.load(from: "/dev/zero", environment: [:]) }
            #expect(endless.description == "config /dev/zero: larger than 1 MiB")
            let root = try #require(throws: AgentConfig.ConfigError.self) { try AgentConfig.loadRoot("/dev/zero") }
            #expect(root.description == "config /dev/zero: trust root: \(SmallFile.ContentsError.tooLarge(limit: Limits.envelopeBytes))")
            let directoryRoot = try #require(throws: AgentConfig.ConfigError.self) { try AgentConfig.loadRoot(directory.path) }
            #expect(directoryRoot.description.hasSuffix("trust root: cannot read it: Is a directory (errno 21)"), "\(directoryRoot)")
        }
    }
}
