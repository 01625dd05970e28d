#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

// The documents agents and the controller exchange (DESIGN §2). Both sides parse them strictly through
// `ObjectReader`, so a field one side renames is an error, not a silently missing value.

/// `GET /v1/agents/{id}/desired-state`: the latest signed release of each service the agent runs.
package struct DesiredState: Sendable, Equatable {
    package var agentID: String
    /// How often the agent should poll when not long-polling.
    package var pollSeconds: Int64
    /// Signed releases; the container itself is not signed, every element is.
    package var releases: [Envelope]
    /// The newest trust root version the controller serves (`GET /v1/roots/{version}`), or `nil` when it serves none.
    /// An agent holding an older root fetches and verifies every step up to it before it evaluates any release. The
    /// field is absent when `nil`, so agents that predate trust roots read the document as before.
    package var rootVersion: Int64?

    /// Most releases one desired state may carry.
    package static let maximumReleases = 256

    package init(agentID: String, pollSeconds: Int64, releases: [Envelope], rootVersion: Int64? = nil) {
        self.agentID = agentID
        self.pollSeconds = pollSeconds
        self.releases = releases
        self.rootVersion = rootVersion
    }

    package init(json: JSONValue) throws(DocumentError) {
        var reader = try ObjectReader(json, path: "")
        agentID = try reader.required("agentId", Field.string(maxLength: 128))
        pollSeconds = try reader.required("pollSeconds", Field.integer(in: 1...3600))
        releases = try reader.required("releases", Field.list(limit: Self.maximumReleases, Envelope.init(json:path:)))
        rootVersion = try reader.optional("rootVersion", Field.integer(in: 1...Root.maximumVersion))
        try reader.rejectUnknownFields()
    }

    package var json: JSONValue {
        var fields: [String: JSONValue] = [
            "agentId": .string(agentID), "pollSeconds": .integer(pollSeconds), "releases": .array(releases.map(\.json)),
        ]
        if let rootVersion { fields["rootVersion"] = .integer(rootVersion) }
        return .object(fields)
    }
}

/// Where a service stands on one agent.
package enum DeployPhase: String, Sendable, Codable, CaseIterable {
    case running
    case deploying
    case failed
    case rolledBack = "rolled-back"
    case waiting
}

/// The health verdict an agent reports for a service.
package enum HealthState: String, Sendable, Codable, CaseIterable {
    case healthy
    case unhealthy
    case unknown
}

/// `POST /v1/agents/{id}/status`: what an agent runs and how it is doing. Never carries env values.
package struct StatusReport: Sendable, Equatable {
    package var agentVersion: String
    package var hostname: String
    /// `pm2` or `builtin`.
    package var processManager: String
    package var services: [ServiceStatus]
    /// The trust root the agent checks releases against, when it holds a signed one or cannot use it. Absent for an
    /// agent trusting only its `--trusted-key` flags with nothing wrong, so controllers that predate trust roots read
    /// its reports as before.
    package var trustRoot: TrustRootStatus?

    package static let maximumServices = 256

    package init(
        agentVersion: String,
        hostname: String,
        processManager: String,
        services: [ServiceStatus],
        trustRoot: TrustRootStatus? = nil
    ) {
        self.agentVersion = agentVersion
        self.hostname = hostname
        self.processManager = processManager
        self.services = services
        self.trustRoot = trustRoot
    }

    package init(json: JSONValue) throws(DocumentError) {
        var reader = try ObjectReader(json, path: "")
        agentVersion = try reader.required("agentVersion", Field.string(maxLength: 64))
        hostname = try reader.required("hostname", Field.string(maxLength: 255))
        processManager = try reader.required("processManager", Field.string(maxLength: 32))
        services = try reader.required("services", Field.list(limit: Self.maximumServices, ServiceStatus.init(json:path:)))
        trustRoot = try reader.optional("trustRoot", TrustRootStatus.init(json:path:))
        try reader.rejectUnknownFields()
    }

    package var json: JSONValue {
        var fields: [String: JSONValue] = [
            "agentVersion": .string(agentVersion), "hostname": .string(hostname),
            "processManager": .string(processManager), "services": .array(services.map(\.json)),
        ]
        if let trustRoot { fields["trustRoot"] = trustRoot.json }
        return .object(fields)
    }
}

/// The trust root an agent holds, as it reports it.
package struct TrustRootStatus: Sendable, Equatable {
    /// The version of the newest root the agent accepted.
    package var version: Int64
    /// When it expires (`nil` for a root built from trusted-key flags, which does not).
    package var expiresAt: Date?
    /// Why the agent admits no new release (its root expired, or a newer root could not be fetched or verified), or
    /// `nil` when it can.
    package var problem: String?

    package init(version: Int64, expiresAt: Date?, problem: String?) {
        self.version = version
        self.expiresAt = expiresAt
        self.problem = problem
    }

    init(json: JSONValue, path: String) throws(DocumentError) {
        var reader = try ObjectReader(json, path: path)
        version = try reader.required("version", Field.integer(in: 1...Root.maximumVersion))
        expiresAt = try reader.optional("expiresAt", Timestamp.field)
        problem = try reader.optional("problem", ServiceStatus.text(maxLength: 2048))
        try reader.rejectUnknownFields()
    }

    package var json: JSONValue {
        var fields: [String: JSONValue] = ["version": .integer(version)]
        if let expiresAt { fields["expiresAt"] = .string(Timestamp.format(expiresAt)) }
        if let problem { fields["problem"] = .string(problem) }
        return .object(fields)
    }
}

/// One service's status on one agent.
package struct ServiceStatus: Sendable, Equatable {
    /// Most processes one service's status lists (a release's apps' instances, which PM2 caps far lower in practice).
    package static let maximumProcesses = 1024
    /// Most failures one service's status lists (the agent sends its newest 10).
    package static let maximumFailures = 32

    package var service: String
    /// The serial running now (`nil` before the first install).
    package var serial: Int64?
    package var version: String?
    /// The newest serial the agent has seen for this service (may differ from `serial` while deploying or after a
    /// failure).
    package var targetSerial: Int64?
    package var phase: DeployPhase
    /// A human sentence: what happened last, or why a release was refused or rolled back.
    package var message: String
    package var health: HealthState
    /// Serials this agent refused or rolled back, newest first, with the reason.
    package var failures: [ReleaseFailure]
    package var processes: [ProcessReport]

    package init(
        service: String,
        serial: Int64?,
        version: String?,
        targetSerial: Int64?,
        phase: DeployPhase,
        message: String,
        health: HealthState,
        failures: [ReleaseFailure] = [],
        processes: [ProcessReport]
    ) {
        self.service = service
        self.serial = serial
        self.version = version
        self.targetSerial = targetSerial
        self.phase = phase
        self.message = message
        self.health = health
        self.failures = failures
        self.processes = processes
    }

    init(json: JSONValue, path: String) throws(DocumentError) {
        var reader = try ObjectReader(json, path: path)
        service = try reader.required("service", Release.serviceName)
        serial = try reader.optional("serial", Field.integer(in: 1...Release.maximumSerial))
        version = try reader.optional("version", Field.string(maxLength: 128))
        // No release has an empty version: absent is "none installed". Kept, an empty one made a row of the fleet summary
        // with no label whose links the fleet query refuses.
        if version?.isEmpty == true { throw .invalidValue(field: "\(path).version", reason: "must not be empty (leave it out when no release runs)") }
        targetSerial = try reader.optional("targetSerial", Field.integer(in: 1...Release.maximumSerial))
        phase = try reader.required("phase", Field.enumeration(DeployPhase.self))
        message = try reader.required("message", Self.text(maxLength: 2048))
        health = try reader.required("health", Field.enumeration(HealthState.self))
        failures = try reader.optional("failures", Field.list(limit: Self.maximumFailures, ReleaseFailure.init(json:path:))) ?? []
        processes = try reader.required("processes", Field.list(limit: Self.maximumProcesses, ProcessReport.init(json:path:)))
        try reader.rejectUnknownFields()
    }

    package var json: JSONValue {
        var fields: [String: JSONValue] = [
            "service": .string(service), "phase": .string(phase.rawValue), "message": .string(message),
            "health": .string(health.rawValue), "processes": .array(processes.map(\.json)),
            "failures": .array(failures.map(\.json)),
        ]
        if let serial { fields["serial"] = .integer(serial) }
        if let version { fields["version"] = .string(version) }
        if let targetSerial { fields["targetSerial"] = .integer(targetSerial) }
        return .object(fields)
    }

    /// Free text, bounded: newlines and other control characters allowed (an older agent sends a tool's error output as
    /// it came), except U+0000. PostgreSQL stores no NUL in text (and reads no `\u0000` as `jsonb`): stored, it failed
    /// the whole batch of status reports it came in, or every later read of the fleet's statuses.
    static func text(maxLength: Int) -> (JSONValue, String) throws(DocumentError) -> String {
        { (value, path) throws(DocumentError) in
            guard case .string(let text) = value else { throw .wrongType(field: path, expected: "string", got: value.typeName) }
            guard text.utf8.count <= maxLength else { throw .tooLarge(field: path, limit: maxLength, actual: text.utf8.count) }
            if text.utf8.contains(0) { throw .invalidValue(field: path, reason: "U+0000 (NUL) is not allowed") }
            return text
        }
    }

}

/// A serial an agent refused (bad signature, expired, replay) or rolled back, and why.
package struct ReleaseFailure: Sendable, Equatable {
    package var serial: Int64
    package var reason: String
    /// `refused` (never installed) or `rolled-back` (installed, failed its health gate).
    package var kind: String
    /// The evidence (stage, gate verdict, log tails): on the newest failure of a service that has one.
    package var diagnosis: FailureDiagnosis?

    package init(serial: Int64, reason: String, kind: String, diagnosis: FailureDiagnosis? = nil) {
        self.serial = serial
        self.reason = reason
        self.kind = kind
        self.diagnosis = diagnosis
    }

    package init(json: JSONValue, path: String) throws(DocumentError) {
        var reader = try ObjectReader(json, path: path)
        serial = try reader.required("serial", Field.integer(in: 0...Release.maximumSerial))
        reason = try reader.required("reason", ServiceStatus.text(maxLength: 2048))
        kind = try reader.required("kind", Field.string(maxLength: 32))
        diagnosis = try reader.optional("diagnosis", FailureDiagnosis.init(json:path:))
        try reader.rejectUnknownFields()
    }

    package var json: JSONValue {
        var fields: [String: JSONValue] = ["serial": .integer(serial), "reason": .string(reason), "kind": .string(kind)]
        if let diagnosis { fields["diagnosis"] = diagnosis.json }
        return .object(fields)
    }
}

/// One process instance in a status report (DESIGN §2).
package struct ProcessReport: Sendable, Equatable {
    package var name: String
    package var pmId: Int64
    /// The OS pid while the instance runs.
    package var pid: Int64?
    package var status: String
    package var restarts: Int64
    package var uptimeSeconds: Int64?
    package var memoryBytes: Int64
    package var cpuPercent: Double

    /// Highest `cpuPercent` accepted: a thousand cores at 100 %.
    package static let maximumCPUPercent: Double = 100_000

    package init(
        name: String,
        pmId: Int64,
        pid: Int64? = nil,
        status: String,
        restarts: Int64,
        uptimeSeconds: Int64?,
        memoryBytes: Int64,
        cpuPercent: Double
    ) {
        self.name = name
        self.pmId = pmId
        self.pid = pid
        self.status = status
        self.restarts = restarts
        self.uptimeSeconds = uptimeSeconds
        self.memoryBytes = memoryBytes
        self.cpuPercent = cpuPercent
    }

    init(json: JSONValue, path: String) throws(DocumentError) {
        var reader = try ObjectReader(json, path: path)
        // An app's name as a release may give it (`PM2App`): a report naming the process must not be refused for it.
        name = try reader.required("name", Field.string(maxLength: PM2App.maximumNameBytes))
        pmId = try reader.required("pmId", Field.integer(in: 0...Int64(Int32.max)))
        pid = try reader.optional("pid", Field.integer(in: 1...Int64(Int32.max)))
        status = try reader.required("status", Field.string(maxLength: 32))
        restarts = try reader.required("restarts", Field.integer(in: 0...Int64(Int32.max)))
        uptimeSeconds = try reader.optional("uptimeSeconds", Field.integer(in: 0...Int64(Int32.max) * 100))
        memoryBytes = try reader.required("memoryBytes", Field.integer(in: 0...(1 << 50)))
        cpuPercent = try reader.required("cpuPercent") { (value, path) throws(DocumentError) -> Double in
            let number: Double
            switch value {
            case .integer(let n): number = Double(n)
            case .number(let d) where d.isFinite: number = d
            default: throw .wrongType(field: path, expected: "non-negative number", got: value.typeName)
            }
            guard (0...Self.maximumCPUPercent).contains(number) else {
                let shown = if case .integer(let n) = value { "\(n)" } else { "\(number)" }
                throw .invalidValue(field: path, reason: "\(shown) is outside 0...\(Int(Self.maximumCPUPercent))")
            }
            return number
        }
        try reader.rejectUnknownFields()
    }

    package var json: JSONValue {
        var fields: [String: JSONValue] = [
            "name": .string(name), "pmId": .integer(pmId), "status": .string(status), "restarts": .integer(restarts),
            "memoryBytes": .integer(memoryBytes), "cpuPercent": .number(cpuPercent),
        ]
        if let uptimeSeconds { fields["uptimeSeconds"] = .integer(uptimeSeconds) }
        if let pid { fields["pid"] = .integer(pid) }
        return .object(fields)
    }
}

/// `POST /v1/agents` (enroll token): an instance asks for its own agent token.
package struct EnrollRequest: Sendable, Equatable {
    package var name: String
    package var hostname: String
    package var services: [String]
    /// Replace the existing agent of the same name (keeping its id, rotating its token). Only an operator token may
    /// ask for it; an enrollment token only ever creates new agents.
    package var replace: Bool
    /// The EC2 instance's own proof of who it is, as the instance metadata service hands it out. A controller set up
    /// for it (`serve --instance-identity-cert`) enrolls, with an enrollment token, only an instance that sends a valid
    /// one, and only once per instance.
    package var instanceIdentity: InstanceIdentityProof?
    /// The SHA-256 (lowercase hex) of the agent token the agent chose itself. The controller stores it instead of
    /// issuing a token, and answers with `EnrollAcknowledgement`: the token never crosses the network, and a retry of an
    /// enrolment whose answer was lost (the same name, digest and services) is answered again instead of refused as a
    /// taken name. Without it (an older agent) the controller issues the token (`EnrollResponse`).
    package var tokenSHA256: SHA256Digest?

    package init(
        name: String,
        hostname: String,
        services: [String],
        replace: Bool = false,
        instanceIdentity: InstanceIdentityProof? = nil,
        tokenSHA256: SHA256Digest? = nil
    ) {
        self.name = name
        self.hostname = hostname
        self.services = services
        self.replace = replace
        self.instanceIdentity = instanceIdentity
        self.tokenSHA256 = tokenSHA256
    }

    /// The longest agent name, in UTF-8 bytes.
    package static let maximumNameBytes = 128

    /// Whether `text` has the shape of an agent id: `agt_` and 16 lowercase hex digits.
    package static func hasAgentIDShape(_ text: String) -> Bool {
        text.hasPrefix("agt_") && Hex.isLowercaseHex(String(text.dropFirst(4)), count: 16)
    }

    /// Why `name` cannot name an agent, or `nil` when it can. Operators tell agents apart by their names on the
    /// dashboard, in `status` and in logs, and remove or replace them by name: a name must look like what it is. It
    /// holds no control character (C0 or C1), no invisible formatting character (zero-width spaces and joiners,
    /// bidirectional overrides that show it reversed, a soft hyphen, a byte-order mark), no space other than U+0020 and
    /// none at either end, and is not `.` or `..`, which no URL path can name (clients and browsers take
    /// `/v1/agents/..` for the parent of `/v1/agents`). Look-alike letters of other scripts remain possible. Nor has it
    /// an agent id's shape (`hasAgentIDShape`): the agent pages and `agents show` take a name or an id, and an agent named
    /// after another's id (ids are shown to every viewer) was shown in its place.
    package static func nameProblem(_ name: String) -> String? {
        guard !name.isEmpty else { return "must not be empty" }
        guard name.utf8.count <= maximumNameBytes else { return "must be at most \(maximumNameBytes) bytes" }
        guard name != "." && name != ".." else { return "must not be . or .." }
        guard !hasAgentIDShape(name.lowercased()) else {
            return "must not have the shape of an agent id (agt_ and 16 hex digits): pages and commands that take a name take an id too"
        }
        func code(_ scalar: Unicode.Scalar) -> String {
            let hex = String(scalar.value, radix: 16, uppercase: true)
            return "U+" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex
        }
        for scalar in name.unicodeScalars {
            // Shown as nothing whatever their category (a combining grapheme joiner, variation selectors, Hangul fillers).
            if scalar.properties.isDefaultIgnorableCodePoint && scalar.properties.generalCategory != .format {
                return "must not hold an invisible character (\(code(scalar)))"
            }
            switch scalar.properties.generalCategory {
            case .control:
                return "must not hold a control character (\(code(scalar)))"
            case .format:
                return "must not hold an invisible formatting character (\(code(scalar)): zero-width or bidirectional)"
            case .spaceSeparator where scalar != " ", .lineSeparator, .paragraphSeparator:
                return "must not hold a space other than U+0020 (\(code(scalar)))"
            case .privateUse, .surrogate, .unassigned:
                return "must not hold an unassigned or private-use character (\(code(scalar)))"
            default:
                continue
            }
        }
        guard name.unicodeScalars.first != " ", name.unicodeScalars.last != " " else { return "must not begin or end with a space" }
        return nil
    }

    package init(json: JSONValue) throws(DocumentError) {
        var reader = try ObjectReader(json, path: "")
        name = try reader.required("name", Field.string(maxLength: Self.maximumNameBytes))
        if let problem = Self.nameProblem(name) { throw .invalidValue(field: "name", reason: problem) }
        hostname = try reader.required("hostname", Field.string(maxLength: 255))
        services = try reader.required("services", Field.list(limit: 256, Release.serviceName))
        replace = try reader.optional("replace", Field.bool) ?? false
        instanceIdentity = try reader.optional("instanceIdentity") { (value, path) throws(DocumentError) in
            try InstanceIdentityProof(json: value, path: path)
        }
        tokenSHA256 = try reader.optional("tokenSHA256", Field.sha256)
        try reader.rejectUnknownFields()
        guard !services.isEmpty else { throw .invalidValue(field: "services", reason: "at least one service is required") }
    }

    package var json: JSONValue {
        var fields: [String: JSONValue] = [
            "name": .string(name), "hostname": .string(hostname), "services": .array(services.map { .string($0) }),
        ]
        // Only when asked: an older controller rejects the unknown field, which is right for a replace it cannot do.
        if replace { fields["replace"] = .bool(true) }
        // Likewise: only an agent that read it sends it.
        if let instanceIdentity { fields["instanceIdentity"] = instanceIdentity.json }
        if let tokenSHA256 { fields["tokenSHA256"] = .string(tokenSHA256.hex) }
        return .object(fields)
    }
}

/// An EC2 instance identity document and its PKCS #7 signature, as the instance metadata service answers them
/// (`/latest/dynamic/instance-identity/document` and `/latest/dynamic/instance-identity/pkcs7`): AWS signs the
/// instance's id, account and region, so a controller holding AWS's public certificate can tell an instance of its
/// own account from anyone else holding an enrollment token.
package struct InstanceIdentityProof: Sendable, Equatable {
    /// The document (JSON text), as served. The signature's own copy of it is what a controller believes.
    package var document: String
    /// The signature: base64 of the DER PKCS #7 SignedData, as served (line breaks allowed).
    package var pkcs7: String

    /// Longest document accepted (a real one is about 500 bytes).
    package static let maximumDocumentBytes = 8 * 1024
    /// Longest signature accepted (a real one is about 1.5 KB of base64).
    package static let maximumSignatureBytes = 16 * 1024

    package init(document: String, pkcs7: String) {
        self.document = document
        self.pkcs7 = pkcs7
    }

    package init(json: JSONValue, path: String = "instanceIdentity") throws(DocumentError) {
        var reader = try ObjectReader(json, path: path)
        document = try reader.required("document", ServiceStatus.text(maxLength: Self.maximumDocumentBytes))
        pkcs7 = try reader.required("pkcs7", ServiceStatus.text(maxLength: Self.maximumSignatureBytes))
        try reader.rejectUnknownFields()
    }

    package var json: JSONValue { .object(["document": .string(document), "pkcs7": .string(pkcs7)]) }

    /// An EC2 instance id: `i-` and 8 or 17 lowercase hexadecimal digits.
    package static func isInstanceID(_ text: String) -> Bool {
        guard text.hasPrefix("i-") else { return false }
        let digits = String(text.dropFirst(2))
        return Hex.isLowercaseHex(digits, count: 8) || Hex.isLowercaseHex(digits, count: 17)
    }
}

/// The answer to `POST /v1/agents`: the agent's id and its token (shown once).
package struct EnrollResponse: Sendable, Equatable {
    package var agentID: String
    package var token: String

    package init(agentID: String, token: String) {
        self.agentID = agentID
        self.token = token
    }

    package init(json: JSONValue) throws(DocumentError) {
        var reader = try ObjectReader(json, path: "")
        agentID = try reader.required("agentId", Field.string(maxLength: 128))
        token = try reader.required("token", Field.string(maxLength: 512))
        try reader.rejectUnknownFields()
    }

    package var json: JSONValue { .object(["agentId": .string(agentID), "token": .string(token)]) }
}

/// The answer to an enrolment whose agent chose its token (`EnrollRequest.tokenSHA256`): the agent's id. (The digest is
/// not echoed: no answer carries a token or a token's digest.)
package struct EnrollAcknowledgement: Sendable, Equatable {
    package var agentID: String

    package init(agentID: String) {
        self.agentID = agentID
    }

    package init(json: JSONValue) throws(DocumentError) {
        var reader = try ObjectReader(json, path: "")
        agentID = try reader.required("agentId", Field.string(maxLength: 128))
        try reader.rejectUnknownFields()
    }

    package var json: JSONValue { .object(["agentId": .string(agentID)]) }
}

/// Every API error body: `{"error": "<code>", "message": "<human sentence>"}`.
package struct APIErrorBody: Sendable, Equatable, Codable {
    package var error: String
    package var message: String

    package init(error: String, message: String) {
        self.error = error
        self.message = message
    }
}
