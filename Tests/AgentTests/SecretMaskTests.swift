import Logging
import Shared
import Synchronization
import TestSupport
import Testing

@testable import Agent

/// The masking rule of docs/agent.md ("What leaves the instance"), row by row.
@Suite("Secret mask: instance env values never appear in what the agent sends or logs")
struct SecretMaskTests {
    struct Row: Sendable, CustomTestStringConvertible {
        var name: String
        var env: [String: String]
        var text: String
        var expected: String
        var testDescription: String { name }
    }

    static let rows: [Row] = [
        Row(
            name: "a token anywhere",
            env: ["HEALTH_TOKEN": "s3cr3t-abc"],
            text: "GET /h?t=s3cr3t-abc failed",
            expected: "GET /h?t=${HEALTH_TOKEN} failed"
        ),
        Row(name: "every occurrence", env: ["K": "abcdef"], text: "abcdef,abcdef;xabcdefx", expected: "${K},${K};x${K}x"),
        Row(
            name: "percent-encoded form",
            env: ["PASS": "p@ss w0rd!"],
            text: "url ?p=p%40ss%20w0rd%21 and p@ss w0rd!",
            expected: "url ?p=${PASS} and ${PASS}"
        ),
        Row(
            name: "the form a health URL's path gives it",
            env: ["PATH_SECRET": "a+b c/d@e"],
            text: "GET http://127.0.0.1:3000/h/a+b%20c/d@e failed",
            expected: "GET http://127.0.0.1:3000/h/${PATH_SECRET} failed"
        ),
        Row(
            name: "short values stay",
            env: ["DEBUG": "1", "FLAG": "true", "PORT": "3000", "SHORT": "abcde"],
            text: "serial 1 true 3000 abcde",
            expected: "serial 1 true 3000 abcde"
        ),
        Row(name: "six bytes is the threshold", env: ["CODE": "zq9x7w"], text: "code zq9x7w", expected: "code ${CODE}"),
        Row(
            name: "digits only as a whole run",
            env: ["PIN": "500000"],
            text: "size 5000000, pin 500000, id 1500000",
            expected: "size 5000000, pin ${PIN}, id 1500000"
        ),
        Row(name: "digits at the edges", env: ["PIN": "424242"], text: "424242", expected: "${PIN}"),
        Row(
            name: "longest value first",
            env: ["A": "secret-long-value", "B": "secret"],
            text: "x secret-long-value y secret",
            expected: "x ${A} y ${B}"
        ),
        Row(
            name: "same value, first name wins",
            env: ["B_TOKEN": "shared-value", "A_TOKEN": "shared-value"],
            text: "shared-value",
            expected: "${A_TOKEN}"
        ),
        Row(name: "non-ASCII value", env: ["MOT": "pässwörd"], text: "le pässwörd: pässwörd.", expected: "le ${MOT}: ${MOT}."),
        Row(name: "nothing to mask", env: ["K": "abcdefgh"], text: "all fine", expected: "all fine"),
        Row(name: "empty text", env: ["K": "abcdefgh"], text: "", expected: ""),
        // The envfile fuzz target's first find (Fuzz/Corpus/envfile/regression-value-inside-name): the placeholder names
        // the variable, so a value that is part of its own name still reads inside `${NAME}`. The name is what every
        // placeholder shows anyway; the value itself is replaced, once, and not masked again inside the placeholder.
        Row(name: "value inside its own name", env: ["GRlnlrG": "GRlnlr"], text: "before<GRlnlr>after", expected: "before<${GRlnlrG}>after"),
        // A name holding another (shorter) secret's value is not masked in turn: a name is what every placeholder
        // shows, and masking inside it again garbled the text.
        Row(
            name: "a value inside another secret's name",
            env: ["PG_PASSWORD": "hunter22-x", "SECRET_NAME": "PASSWORD"],
            text: "auth with hunter22-x failed; PASSWORD rotated",
            expected: "auth with ${PG_PASSWORD} failed; ${SECRET_NAME} rotated"
        ),
        // Each name holds the next secret's value: replaced again and again, every line grew about 42 times per name,
        // gigabytes from a seven-line env file. Once each, it is as long as the names.
        Row(
            name: "a chain of names holding values",
            env: [
                String(repeating: "b", count: 256): "aaaaaa", String(repeating: "c", count: 256): "bbbbbb",
                String(repeating: "d", count: 256): "cccccc", String(repeating: "e", count: 256): "dddddd",
            ],
            text: "x aaaaaa y dddddd",
            expected: "x ${\(String(repeating: "b", count: 256))} y ${\(String(repeating: "e", count: 256))}"
        ),
    ]

    /// What an app's own logging makes of instance env values, captured from Node 20 (`console.log` of an object, and
    /// `JSON.stringify`): escaped, and a multi-line value (a PEM key written `"…\n…"` in an env file) cut into one
    /// quoted piece per line.
    static let escapedRows: [Row] = [
        Row(
            name: "JSON.stringify escapes a backslash and a quote",
            env: ["DB_PASSWORD": #"p\ss"w0rd-9"#],
            text: #"{"DB_PASSWORD":"p\\ss\"w0rd-9"}"#,
            expected: #"{"DB_PASSWORD":"${DB_PASSWORD}"}"#
        ),
        Row(
            name: "console.log escapes a backslash in single quotes",
            env: ["DB_PASSWORD": #"p\ss"w0rd-9"#],
            text: #"  DB_PASSWORD: 'p\\ss"w0rd-9',"#,
            expected: #"  DB_PASSWORD: '${DB_PASSWORD}',"#
        ),
        Row(
            name: "console.log quotes a value holding ' in double quotes",
            env: ["Q": "it's-a-secret"],
            text: #"  Q: "it's-a-secret","#,
            expected: #"  Q: "${Q}","#
        ),
        Row(
            name: "control characters, each way",
            env: ["C": "tab\there\u{1B}x"],
            text: #"C: 'tab\there\x1Bx' {"C":"tab\there\u001bx"}"#,
            expected: #"C: '${C}' {"C":"${C}"}"#
        ),
        Row(
            name: "a PEM key, line by line as console.log prints it",
            env: [
                "JWT_PRIVATE_KEY":
                    "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n-----END PRIVATE KEY-----"
            ],
            text: """
                  JWT_PRIVATE_KEY: '-----BEGIN PRIVATE KEY-----\\n' +
                    'MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\\n' +
                    '-----END PRIVATE KEY-----',
                """,
            expected: """
                  JWT_PRIVATE_KEY: '${JWT_PRIVATE_KEY}\\n' +
                    '${JWT_PRIVATE_KEY}\\n' +
                    '${JWT_PRIVATE_KEY}',
                """
        ),
        Row(
            name: "a PEM key whole in JSON",
            env: [
                "JWT_PRIVATE_KEY":
                    "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n-----END PRIVATE KEY-----"
            ],
            text:
                #"{"JWT_PRIVATE_KEY":"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n-----END PRIVATE KEY-----"}"#,
            expected: #"{"JWT_PRIVATE_KEY":"${JWT_PRIVATE_KEY}"}"#
        ),
        Row(
            name: "a line of a PEM key in a stack trace",
            env: ["JWT_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----\r\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcw\r\n-----END PRIVATE KEY-----"],
            text: "Error: bad key MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcw at sign()",
            expected: "Error: bad key ${JWT_PRIVATE_KEY} at sign()"
        ),
    ]

    /// Lines of a multi-line value are looked for on their own only when they hold 16 bytes or more besides their
    /// indentation: a line of blanks, or `}`, would be found in every log line.
    @Test func aMultiLineValuesShortAndBlankLinesAreNotLookedFor() {
        let env = ["SERVICE_ACCOUNT": "{\n        \n  \"id\": 7,\n  \"private_key\": \"MIIEvQIBADANBgkqhkiG9w0BAQEF\"\n}"]
        let mask = SecretMask([env])
        #expect(mask.apply("indented        text, \"id\": 7, done") == "indented        text, \"id\": 7, done")
        #expect(mask.apply(#"key "private_key": "MIIEvQIBADANBgkqhkiG9w0BAQEF" seen"#) == "key ${SERVICE_ACCOUNT} seen")
        let many = (0..<1000).map { "line-\($0)-of-an-allow-list" }.joined(separator: "\n")
        #expect(SecretMask.forms(of: many).count <= SecretMask.maximumLinesPerValue + 6, "a bounded number of patterns per value")
    }

    @Test(arguments: escapedRows)
    func masksWhatAnAppsLoggingWrites(_ row: Row) {
        #expect(SecretMask([row.env]).apply(row.text) == row.expected)
    }

    /// The same through real Node: an app that logs its whole environment (`console.log(process.env)`, and as JSON)
    /// shows no line of any secret once masked. Every secret holds the marker `zqx` on each of its lines.
    @Test func nothingOfASecretSurvivesWhatNodePrints() async throws {
        let env = [
            "JWT_PRIVATE_KEY": "-----BEGIN zqx KEY-----\n" + String(repeating: "MIIEvQzqxBADANBgkqhkiG9w0BAQEFAASC", count: 3)
                + "\n-----END zqx KEY-----",
            "DB_PASSWORD": #"p\zqx"w0rd'9"#,
            "API_TOKEN": "tok\u{1B}zqx\t\u{7F}end",
            "PLAIN": "zqx-plain-value",
        ]
        let script = "console.log(process.env); console.log(JSON.stringify(process.env)); console.log(JSON.stringify(process.env, null, 2))"
        let result = try await Command.run(
            "/usr/bin/env",
            ["node", "-e", script],
            environment: env.merging(["PATH": "/usr/local/bin:/usr/bin:/bin"]) { a, _ in a }
        )
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("zqx"), "node printed the values: \(result.stdout)")
        let masked = SecretMask([env]).apply(result.stdout)
        #expect(!masked.contains("zqx"), "\(masked)")
        #expect(masked.contains("${JWT_PRIVATE_KEY}") && masked.contains("${DB_PASSWORD}") && masked.contains("${API_TOKEN}"))
    }

    @Test(arguments: rows)
    func masks(_ row: Row) {
        #expect(SecretMask([row.env]).apply(row.text) == row.expected)
    }

    @Test func valuesOfEveryServiceAreMasked() {
        let secrets = InstanceSecrets()
        secrets.update(service: "api", values: ["API_KEY": "api-secret-1"])
        secrets.update(service: "worker", values: ["WORKER_KEY": "worker-secret-2"])
        #expect(secrets.apply("api-secret-1 worker-secret-2") == "${API_KEY} ${WORKER_KEY}")
        // A rotated value is masked, and so is the one it replaced: the app's log files still hold it, and a later
        // failure's log tail ships them.
        secrets.update(service: "api", values: ["API_KEY": "api-secret-3"])
        #expect(secrets.apply("api-secret-3 api-secret-1") == "${API_KEY} ${API_KEY}")
        secrets.update(service: "api", values: ["API_KEY": "api-secret-4"])
        #expect(secrets.apply("api-secret-1 api-secret-3 api-secret-4") == "${API_KEY} ${API_KEY} ${API_KEY}")
        // A variable taken out of the file: still masked.
        secrets.update(service: "worker", values: [:])
        #expect(secrets.apply("worker-secret-2") == "${WORKER_KEY}")
        // Short values a rewrite changes (flags, ports) take no place among the retired.
        secrets.update(service: "api", values: ["API_KEY": "api-secret-4", "PORT": "3000", "DEBUG": "true"])
        for port in 3001..<3100 { secrets.update(service: "api", values: ["API_KEY": "api-secret-4", "PORT": "\(port)", "DEBUG": "true"]) }
        #expect(secrets.apply("api-secret-1") == "${API_KEY}", "a retired secret is still masked after 99 port changes")
        // A credential refreshed again and again: the newest `retiredLimit` replaced values stay masked, not every one.
        for round in 0..<(InstanceSecrets.retiredLimit + 5) { secrets.update(service: "api", values: ["API_KEY": "rotating-\(round)-x"]) }
        let last = InstanceSecrets.retiredLimit + 4
        #expect(secrets.apply("rotating-\(last)-x") == "${API_KEY}")
        #expect(secrets.apply("rotating-\(last - InstanceSecrets.retiredLimit)-x") == "${API_KEY}")
        #expect(secrets.apply("rotating-\(last - InstanceSecrets.retiredLimit - 1)-x") == "rotating-\(last - InstanceSecrets.retiredLimit - 1)-x")
    }

    @Test func stateMessagesAndFailuresAreMasked() {
        var state = AgentState()
        state["api"] = ServiceState(
            failures: [.init(serial: 3, reason: "pm2: env tok-123456 refused", kind: .rolledBack)],
            message: "app printed TOKEN=tok-123456"
        )
        let noted = state.noteControllerContact(failure: "GET tok-123456", at: .init(timeIntervalSince1970: 0))
        #expect(noted)
        state.mask(with: SecretMask([["TOKEN": "tok-123456"]]))
        #expect(state["api"].message == "app printed TOKEN=${TOKEN}")
        #expect(state["api"].failures.first?.reason == "pm2: env ${TOKEN} refused")
        #expect(state.controllerProblem?.message == "GET ${TOKEN}")
    }

    /// Records what reaches the real handler behind the mask.
    final class Recorder: LogHandler, Sendable {
        let lines = Mutex<[String]>([])
        /// The handler's own metadata, added to each line as `StreamLogHandler` adds it.
        let stored = Mutex<Logger.Metadata>([:])
        var logLevel: Logger.Level {
            get { .trace }
            set {}
        }
        var metadata: Logger.Metadata {
            get { stored.withLock { $0 } }
            set { stored.withLock { $0 = newValue } }
        }
        var metadataProvider: Logger.MetadataProvider? {
            get { nil }
            set {}
        }
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { stored.withLock { $0[key] } }
            set { stored.withLock { $0[key] = newValue } }
        }
        func log(event: LogEvent) {
            let all = stored.withLock { $0 }.merging(event.metadata ?? [:]) { _, event in event }
            let metadata = all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            let line = "\(event.message) \(metadata) \(event.error.map { "\($0)" } ?? "")"
            lines.withLock { $0.append(line) }
        }
    }

    struct EchoingError: Error, CustomStringConvertible {
        var description: String
    }

    @Test func logLinesAreMaskedInMessageMetadataAndError() {
        let secrets = InstanceSecrets()
        secrets.update(service: "api", values: ["DB_PASSWORD": "hunter2-hunter2"])
        let recorder = Recorder()
        let logger = Logger(label: "test") { _ in MaskingLogHandler(base: recorder, secrets: secrets) }
        logger.info(
            "connect hunter2-hunter2",
            error: EchoingError(description: "error hunter2-hunter2"),
            metadata: [
                "ferry.reason": "pm2 said hunter2-hunter2", "nested": ["list": ["hunter2-hunter2"], "map": ["k": "hunter2-hunter2"]],
            ]
        )
        let lines = recorder.lines.withLock { $0 }
        #expect(lines.count == 1)
        #expect(!(lines.first ?? "").contains("hunter2"), "\(lines)")
        #expect((lines.first ?? "").components(separatedBy: "${DB_PASSWORD}").count == 6, "\(lines)")

        // Metadata set on the logger, and a provider's: passed to the base handler as they were, unmasked.
        var handler = MaskingLogHandler(base: recorder, secrets: secrets)
        handler.metadataProvider = Logger.MetadataProvider { ["from.provider": "hunter2-hunter2 \u{1B}[31m"] }
        var tagged = Logger(label: "test") { _ in handler }
        tagged[metadataKey: "artifact.url"] = "https://a.example/x?k=hunter2-hunter2"
        tagged.info("fetching")
        let tagLine = recorder.lines.withLock { $0.last ?? "" }
        #expect(!tagLine.contains("hunter2") && !tagLine.contains("\u{1B}"), "\(tagLine)")
        #expect(
            tagLine.contains("artifact.url=https://a.example/x?k=${DB_PASSWORD}") && tagLine.contains("from.provider=${DB_PASSWORD}"),
            "\(tagLine)"
        )
    }

    /// What apps wrote reaches the log as one line, with no sequence a terminal would act on: with secrets to mask and
    /// without (the handler used to pass events through untouched when there were none).
    @Test(arguments: [false, true])
    func logLinesKeepNoControlSequence(withSecrets: Bool) {
        let secrets = InstanceSecrets()
        if withSecrets { secrets.update(service: "api", values: ["DB_PASSWORD": "hunter2-hunter2"]) }
        let recorder = Recorder()
        let logger = Logger(label: "test") { _ in MaskingLogHandler(base: recorder, secrets: secrets) }
        logger.warning(
            "health check answered \u{1B}]52;c;eA==\u{07}",
            error: EchoingError(description: "bad\rgood"),
            metadata: ["ferry.body": "line one\nforged line \u{1B}[2J", "nested": ["list": ["\u{9B}1m"], "map": ["k": "\u{202E}x"]]]
        )
        let lines = recorder.lines.withLock { $0 }
        #expect(lines.count == 1)
        let line = lines.first ?? ""
        #expect(!line.unicodeScalars.contains { TerminalText.needsEscape($0) || $0 == "\n" }, "\(line.debugDescription)")
        for shown in [#"\u001b]52;c;eA==\u0007"#, #"bad\u000dgood"#, #"line one\u000aforged line \u001b[2J"#, #"\u009b1m"#, #"\u202ex"#] {
            #expect(line.contains(shown), "\(shown) in \(line)")
        }
    }
}
