import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

/// Telling the machine an agent was enrolled on from a copy of it (an image baked after enrolment, a copied state
/// directory): reading `/etc/machine-id` and the EC2 instance id (against a loopback stand-in of the metadata
/// service), and the comparison with `<state dir>/machine.json`.
@Suite("Machine check")
struct MachineCheckTests {
    // MARK: - /etc/machine-id

    struct MachineIDCase: Sendable, CustomStringConvertible {
        var description: String
        var bytes: [UInt8]
        /// `nil`: accepted; else a part of the refusal.
        var refusal: String?
    }

    static let id = "3d1219c7c4c5404aaa1f6d2a48adfda4"

    static let machineIDCases: [MachineIDCase] = [
        MachineIDCase(description: "systemd's format", bytes: Array("\(id)\n".utf8)),
        MachineIDCase(description: "no newline", bytes: Array(id.utf8)),
        MachineIDCase(description: "CRLF", bytes: Array("\(id)\r\n".utf8)),
        MachineIDCase(description: "empty (cleared before baking an image)", bytes: [], refusal: "is empty (not set up yet"),
        MachineIDCase(description: "only a newline", bytes: [0x0a], refusal: "is empty"),
        MachineIDCase(description: "uninitialized", bytes: Array("uninitialized\n".utf8), refusal: "is \"uninitialized\""),
        MachineIDCase(description: "31 digits", bytes: Array("\(id.dropLast())\n".utf8), refusal: "is not 32 lowercase hexadecimal digits"),
        MachineIDCase(description: "uppercase", bytes: Array("\(id.uppercased())\n".utf8), refusal: "is not 32 lowercase hexadecimal digits"),
        MachineIDCase(description: "a UUID with dashes", bytes: Array("3d1219c7-c4c5-404a-aa1f-6d2a48adfda4\n".utf8), refusal: "is not 32"),
        MachineIDCase(description: "not UTF-8", bytes: [0xff, 0xfe] + Array(id.utf8.dropFirst(2)), refusal: "is not 32"),
        MachineIDCase(description: "all zeros", bytes: Array((String(repeating: "0", count: 32) + "\n").utf8), refusal: "is all zeros"),
        MachineIDCase(description: "longer than any id", bytes: Array(repeating: 0x61, count: 200), refusal: "is longer than 64 bytes"),
    ]

    @Test(arguments: machineIDCases)
    func machineIDFile(_ testCase: MachineIDCase) async throws {
        try await TestPaths.withTemporaryDirectory("ferry-machine") { directory in
            let file = directory.appendingPathComponent("machine-id").path
            try Data(testCase.bytes).write(to: URL(fileURLWithPath: file))
            var configuration = MachineIdentityReader.Configuration(source: .machineID)
            configuration.machineIDFile = file
            let reader = MachineIdentityReader(configuration: configuration)
            if let refusal = testCase.refusal {
                await #expect {
                    _ = try await reader.read()
                } throws: { error in
                    let text = "\(error)"
                    return text.contains("the machine id in \(file) \(refusal)")
                }
            } else {
                let identity = try #require(try await reader.read())
                #expect(identity.source == .machineID)
                #expect(identity.value.hasPrefix("sha256:") && identity.value.count == 7 + 64)
                // A digest: systemd asks that the id itself is not copied around.
                #expect(!identity.value.contains(Self.id))
            }
        }
    }

    @Test func machineIDsTellMachinesApart() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-machine") { directory in
            func identity(_ text: String) async throws -> MachineIdentity? {
                let file = directory.appendingPathComponent("machine-id").path
                try text.write(toFile: file, atomically: true, encoding: .utf8)
                var configuration = MachineIdentityReader.Configuration(source: .machineID)
                configuration.machineIDFile = file
                return try await MachineIdentityReader(configuration: configuration).read()
            }
            let first = try await identity("\(Self.id)\n")
            let again = try await identity("\(Self.id)\r\n")
            let other = try await identity("0123456789abcdef0123456789abcdef\n")
            #expect(again == first)
            #expect(other != first)

            var missing = MachineIdentityReader.Configuration(source: .machineID)
            missing.machineIDFile = directory.appendingPathComponent("absent").path
            await #expect {
                _ = try await MachineIdentityReader(configuration: missing).read()
            } throws: { "\($0)".contains("\(missing.machineIDFile) does not exist") }
            let off = try await MachineIdentityReader(configuration: .init(source: .none)).read()
            #expect(off == nil)
        }
    }

    // MARK: - EC2 instance metadata (IMDSv2), against the stand-in

    struct MetadataCase: Sendable, CustomStringConvertible {
        var description: String
        var behaviour: MetadataStandIn.Behaviour
        /// The instance id read, or `nil` with `refusal`.
        var expected: String?
        var refusal: String?
        /// Requests the reader makes in all (a refusal is not asked again).
        var requests: Int
    }

    static let metadataCases: [MetadataCase] = {
        func behaviour(_ change: (inout MetadataStandIn.Behaviour) -> Void) -> MetadataStandIn.Behaviour {
            var behaviour = MetadataStandIn.Behaviour()
            change(&behaviour)
            return behaviour
        }
        return [
            MetadataCase(description: "a 17-digit id", behaviour: .init(), expected: "i-0123456789abcdef0", requests: 2),
            MetadataCase(description: "an 8-digit id", behaviour: behaviour { $0.instanceID = "i-1234abcd" }, expected: "i-1234abcd", requests: 2),
            MetadataCase(
                description: "an id with a trailing newline",
                behaviour: behaviour { $0.instanceIDBody = "i-0123456789abcdef0\n" },
                expected: "i-0123456789abcdef0",
                requests: 2
            ),
            MetadataCase(
                description: "IMDSv2 refused (token 403)",
                behaviour: behaviour { $0.tokenStatus = 403 },
                refusal: "refused a session token",
                requests: 1
            ),
            MetadataCase(
                description: "IMDS off (token 404)",
                behaviour: behaviour { $0.tokenStatus = 404 },
                refusal: "answered 404); is this an EC2 instance",
                requests: 1
            ),
            MetadataCase(
                description: "an empty token",
                behaviour: behaviour { $0.tokenBody = "" },
                refusal: "answered a session token that is empty or not printable",
                requests: 1
            ),
            MetadataCase(
                description: "a token with a control character",
                behaviour: behaviour { $0.tokenBody = "abc\u{7}def" },
                refusal: "answered a session token that is empty or not printable",
                requests: 1
            ),
            MetadataCase(
                description: "the id refused",
                behaviour: behaviour { $0.instanceIDStatus = 404 },
                refusal: "refused the instance id",
                requests: 2
            ),
            MetadataCase(
                description: "an HTML page instead of an id (a captive proxy)",
                behaviour: behaviour { $0.instanceIDBody = "<html><body>hello</body></html>" },
                refusal: "answered something that is not an instance id",
                requests: 2
            ),
            MetadataCase(
                description: "an uppercase id",
                behaviour: behaviour { $0.instanceIDBody = "I-0123456789ABCDEF0" },
                refusal: "not an instance id",
                requests: 2
            ),
            MetadataCase(
                description: "an id of 12 digits",
                behaviour: behaviour { $0.instanceIDBody = "i-0123456789ab" },
                refusal: "not an instance id",
                requests: 2
            ),
            MetadataCase(
                description: "a body past 1 KiB",
                behaviour: behaviour { $0.instanceIDBody = String(repeating: "i", count: 4096) },
                refusal: "answered badly",
                requests: 2
            ),
        ]
    }()

    @Test(arguments: metadataCases)
    func instanceID(_ testCase: MetadataCase) async throws {
        try await MetadataStandIn.with(testCase.behaviour) { standIn in
            var configuration = MachineIdentityReader.Configuration(source: .ec2)
            configuration.metadataURL = standIn.baseURL
            configuration.retryDelay = .milliseconds(10)
            // None of these cases is about a timeout: on a loaded machine the default 2 s per request ran out and the
            // request was asked again, which the counts below would read as a retry of the answer itself.
            configuration.timeout = .seconds(30)
            let reader = MachineIdentityReader(configuration: configuration)
            if let expected = testCase.expected {
                let identity = try await reader.read()
                #expect(identity == MachineIdentity(source: .ec2, value: expected))
            } else if let refusal = testCase.refusal {
                await #expect {
                    _ = try await reader.read()
                } throws: { "\($0)".contains(refusal) }
            }
            let requests = standIn.requests
            #expect(requests.count == testCase.requests, "\(requests.map { "\($0.method) \($0.path)" })")
            // IMDSv2: a PUT with the TTL header, then GETs with the token.
            #expect(requests.first?.method == "PUT" && requests.first?.ttlHeader == "60")
            for request in requests.dropFirst() { #expect(request.method == "GET" && request.token == MetadataStandIn.token) }
        }
    }

    @Test func aStalledServiceTimesOutAndIsAskedAgain() async throws {
        try await MetadataStandIn.with(.init(stall: .seconds(20))) { standIn in
            var configuration = MachineIdentityReader.Configuration(source: .ec2)
            configuration.metadataURL = standIn.baseURL
            configuration.timeout = .milliseconds(300)
            configuration.attempts = 2
            configuration.retryDelay = .milliseconds(10)
            let started = ContinuousClock.now
            await #expect {
                _ = try await MachineIdentityReader(configuration: configuration).read()
            } throws: { "\($0)".contains("did not answer") }
            #expect(ContinuousClock.now - started < .seconds(10))
            #expect(standIn.requests.count == 2, "two attempts at the token")
        }
    }

    @Test func aClosedPortIsUnreachable() async throws {
        var configuration = MachineIdentityReader.Configuration(source: .ec2)
        configuration.metadataURL = "http://127.0.0.1:\(try freeLoopbackPort())"
        configuration.retryDelay = .milliseconds(10)
        await #expect {
            _ = try await MachineIdentityReader(configuration: configuration).read()
        } throws: { "\($0)".contains("the instance metadata service (\(configuration.metadataURL)/latest/api/token) did not answer") }
    }

    // MARK: - The comparison with <state dir>/machine.json

    enum Expected: Sendable, Equatable {
        case off, unknown, same, unrecorded, unrecordedReplacing, otherMachine
        case failure(String)
    }

    struct CheckCase: Sendable, CustomStringConvertible {
        var description: String
        var source: MachineIdentitySource = .machineID
        /// This machine's machine-id file; `nil`: none.
        var machineID: String? = "\(MachineCheckTests.id)\n"
        /// The record's text; `nil`: none. `{this}` stands for this machine's identity value.
        var record: String?
        var expected: Expected
    }

    static let checkCases: [CheckCase] = [
        CheckCase(description: "nothing recorded (enrolled before the check)", expected: .unrecorded),
        CheckCase(description: "this machine", record: record(source: "machine-id", id: "{this}"), expected: .same),
        CheckCase(
            description: "another machine",
            record: record(source: "machine-id", id: "sha256:" + String(repeating: "ab", count: 32)),
            expected: .otherMachine
        ),
        CheckCase(
            description: "recorded from ec2, configured machine-id now",
            record: record(source: "ec2", id: "i-0123456789abcdef0"),
            expected: .unrecordedReplacing
        ),
        CheckCase(description: "the check is off", source: .none, record: "not even JSON", expected: .off),
        CheckCase(
            description: "this machine cannot be identified",
            machineID: nil,
            record: record(source: "machine-id", id: "{this}"),
            expected: .unknown
        ),
        CheckCase(description: "a record that is not JSON", record: "machine 1", expected: .failure("is not a machine record")),
        CheckCase(
            description: "a record without an id",
            record: #"{"source":"machine-id","hostname":"a","recordedAt":"2026-12-04T10:00:00Z"}"#,
            expected: .failure("id: required field is missing")
        ),
        CheckCase(
            description: "a record from an unknown source",
            record: record(source: "hostname", id: "web-1"),
            expected: .failure("must be one of machine-id, ec2, none")
        ),
        CheckCase(
            description: "a record with an unknown field",
            record: #"{"source":"ec2","id":"i-1234abcd","hostname":"a","recordedAt":"2026-12-04T10:00:00Z","extra":1}"#,
            expected: .failure("extra")
        ),
    ]

    static func record(source: String, id: String) -> String {
        #"{"source":"\#(source)","id":"\#(id)","hostname":"web-1","recordedAt":"2026-12-04T10:00:00Z"}"#
    }

    @Test(arguments: checkCases)
    func comparison(_ testCase: CheckCase) async throws {
        try await TestPaths.withTemporaryDirectory("ferry-machine") { directory in
            let layout = AgentLayout(stateDir: directory.path)
            var configuration = MachineIdentityReader.Configuration(source: testCase.source)
            configuration.machineIDFile = directory.appendingPathComponent("machine-id").path
            if let machineID = testCase.machineID { try machineID.write(toFile: configuration.machineIDFile, atomically: true, encoding: .utf8) }
            let reader = MachineIdentityReader(configuration: configuration)
            var this = MachineIdentity(source: .machineID, value: "")
            if testCase.machineID != nil, testCase.source == .machineID { this = try #require(try await reader.read()) }
            if let record = testCase.record {
                try record.replacingOccurrences(of: "{this}", with: this.value).write(toFile: layout.machineFile, atomically: true, encoding: .utf8)
            }
            let before = try? Data(contentsOf: URL(fileURLWithPath: layout.machineFile))

            let outcome: MachineCheck.Outcome
            do {
                outcome = try await MachineCheck.check(layout: layout, reader: reader)
            } catch {
                guard case .failure(let part) = testCase.expected else {
                    Issue.record("unexpected failure: \(error)")
                    return
                }
                #expect("\(error)".contains(part), "\(error)")
                #expect("\(error)".contains("delete the file and start the agent again"), "\(error)")
                return
            }
            switch (outcome, testCase.expected) {
            case (.off, .off), (.unknown, .unknown): break
            case (.same(let identity), .same): #expect(identity == this)
            case (.unrecorded(let identity, nil), .unrecorded): #expect(identity == this)
            case (.unrecorded(let identity, .some(let previous)), .unrecordedReplacing):
                #expect(identity == this)
                #expect(previous.identity.source == .ec2)
            case (.otherMachine(let recorded, let current), .otherMachine):
                #expect(current == this)
                let message = MachineCheck.copyMessage(recorded: recorded, current: current, layout: layout)
                #expect(message.contains("was enrolled on another machine (machine id digest abababababab, host web-1"), "\(message)")
                #expect(message.contains("this machine is \(this)"), "\(message)")
                #expect(!message.contains(Self.id), "the machine id itself stays out of messages")
            default:
                Issue.record("got \(outcome), expected \(testCase.expected)")
            }
            // The check only looks.
            #expect((try? Data(contentsOf: URL(fileURLWithPath: layout.machineFile))) == before)
        }
    }
}
