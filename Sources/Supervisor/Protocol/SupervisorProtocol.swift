import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The operations of the supervisor's socket protocol.
enum SupervisorOperation: String, Sendable, Codable, CaseIterable {
    case ping
    case list
    case start
    case reload
    case delete
    case restart
    case shutdown
}

/// One request to the supervisor daemon.
///
/// On the wire a request is one JSON object on one line (newline-delimited JSON): `{"op":"list"}`,
/// `{"op":"start","app":{<AppSpec>}}`, `{"op":"reload","app":{...}}`, `{"op":"delete","name":"api"}`,
/// `{"op":"restart","name":"api"}`, `{"op":"shutdown"}`, `{"op":"ping"}`. The daemon answers each line with one
/// `SupervisorResponse` line.
enum SupervisorRequest: Sendable, Equatable {
    case ping
    case list
    case start(AppSpec)
    case reload(AppSpec)
    case delete(name: String)
    case restart(name: String)
    case shutdown

    var operation: SupervisorOperation {
        switch self {
        case .ping: .ping
        case .list: .list
        case .start: .start
        case .reload: .reload
        case .delete: .delete
        case .restart: .restart
        case .shutdown: .shutdown
        }
    }

    /// The request as one line of JSON, newline included.
    func encodedLine() throws -> [UInt8] {
        var fields = RequestFields(op: operation.rawValue)
        switch self {
        case .ping, .list, .shutdown: break
        case .start(let app), .reload(let app): fields.app = app
        case .delete(let name), .restart(let name): fields.name = name
        }
        return Array(try JSONEncoder().encode(fields)) + [UInt8(ascii: "\n")]
    }

    /// Parses one request line (without its newline). Every failure names what was wrong.
    static func decode(_ line: [UInt8]) throws(SupervisorFailure) -> SupervisorRequest {
        let fields: RequestFields
        do {
            fields = try JSONDecoder().decode(RequestFields.self, from: Data(line))
        } catch {
            throw SupervisorFailure(.badRequest, "request is not a valid JSON request object: \(describe(error))")
        }
        guard let operation = SupervisorOperation(rawValue: fields.op) else {
            let known = SupervisorOperation.allCases.map(\.rawValue).joined(separator: ", ")
            throw SupervisorFailure(.unknownOperation, "unknown operation \"\(fields.op.prefix(64))\" (known: \(known))")
        }
        func app() throws(SupervisorFailure) -> AppSpec {
            guard let app = fields.app else { throw SupervisorFailure(.badRequest, "\(operation.rawValue) needs an \"app\" object") }
            return app
        }
        func name() throws(SupervisorFailure) -> String {
            guard let name = fields.name else { throw SupervisorFailure(.badRequest, "\(operation.rawValue) needs a \"name\" string") }
            return name
        }
        switch operation {
        case .ping: return .ping
        case .list: return .list
        case .shutdown: return .shutdown
        case .start: return .start(try app())
        case .reload: return .reload(try app())
        case .delete: return .delete(name: try name())
        case .restart: return .restart(name: try name())
        }
    }

    /// A decoding error as one line naming the field (`app.instances: expected Int`).
    static func describe(_ error: any Error) -> String {
        func path(_ codingPath: [any CodingKey]) -> String {
            let text = codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
            return text.isEmpty ? "(top level)" : String(text.drop { $0 == "." })
        }
        func kind(_ type: Any.Type) -> String {
            let name = "\(type)"
            if name.hasPrefix("Dictionary") { return "an object" }
            if name.hasPrefix("Array") { return "an array" }
            if name.hasPrefix("String") { return "a string" }
            if name.hasPrefix("Bool") { return "a boolean" }
            if name.hasPrefix("Int") || name.hasPrefix("UInt") { return "an integer" }
            if name.hasPrefix("Double") || name.hasPrefix("Float") { return "a number" }
            return name
        }
        switch error {
        case DecodingError.keyNotFound(let key, let context):
            return "\(path(context.codingPath + [key])): missing"
        case DecodingError.typeMismatch(let type, let context):
            return "\(path(context.codingPath)): expected \(kind(type))"
        case DecodingError.valueNotFound(let type, let context):
            return "\(path(context.codingPath)): expected \(kind(type)), found null"
        case DecodingError.dataCorrupted(let context):
            return "\(path(context.codingPath)): \(context.debugDescription)"
        default:
            return "\(error)"
        }
    }
}

/// What a request line holds; `op` stays a string so an unknown operation gets its own error.
private struct RequestFields: Codable {
    var op: String
    var app: AppSpec?
    var name: String?
}

/// The daemon's answer to one request.
struct SupervisorResponse: Sendable, Codable, Equatable {
    /// Whether the request was carried out.
    var ok: Bool
    /// The process table (`list`, and after every operation that changes it).
    var processes: [ManagedProcess]?
    /// The daemon's pid (`ping`).
    var pid: Int32?
    /// Why the request failed, when `ok` is false.
    var error: SupervisorFailure?
    /// Each app's `kill_timeout` in milliseconds (`list`), so a client gives a restart or delete by name the time it
    /// needs. Absent from daemons of older versions.
    var killTimeouts: [String: Int64]?
    /// The longest request line this daemon accepts (`list`). Absent from daemons of older versions, which accept 1 MiB.
    var maximumRequestBytes: Int?

    static func success(processes: [ManagedProcess]? = nil, pid: Int32? = nil, killTimeouts: [String: Int64]? = nil) -> SupervisorResponse {
        SupervisorResponse(ok: true, processes: processes, pid: pid, error: nil, killTimeouts: killTimeouts, maximumRequestBytes: nil)
    }

    static func failure(_ failure: SupervisorFailure) -> SupervisorResponse {
        SupervisorResponse(ok: false, processes: nil, pid: nil, error: failure, killTimeouts: nil, maximumRequestBytes: nil)
    }

    /// Parses one answer line (without its newline).
    static func decode(_ line: [UInt8]) throws -> SupervisorResponse {
        try JSONDecoder().decode(SupervisorResponse.self, from: Data(line))
    }

    /// The response as one line of JSON, newline included.
    func encodedLine() -> [UInt8] {
        // Encoding plain structs of strings and numbers cannot fail; fall back to a fixed error line just in case.
        let body =
            (try? JSONEncoder().encode(self)).map(Array.init)
            ?? Array(#"{"ok":false,"error":{"code":"internal","message":"response could not be encoded"}}"#.utf8)
        return body + [UInt8(ascii: "\n")]
    }
}

/// Kinds of refusal the daemon reports.
enum SupervisorErrorCode: String, Sendable, Codable, Equatable {
    /// The line is not a JSON request object, or a field is missing or has the wrong type.
    case badRequest
    /// The line is longer than the daemon accepts.
    case requestTooLarge
    /// `op` names no operation.
    case unknownOperation
    /// The app spec breaks a rule (name, paths, numbers, env).
    case invalidApp
    /// No app of that name is supervised.
    case unknownApp
    /// The app's script does not exist (checked through the `current` symlink).
    case scriptNotFound
    /// The interpreter is not on the app's `PATH`.
    case interpreterNotFound
    /// The daemon is stopping every app and exiting.
    case shuttingDown
    /// Too many connections at once.
    case busy
    /// Something failed inside the daemon; its log has the details.
    case `internal`
}

/// A refusal: a code a program can act on and a message a person can.
struct SupervisorFailure: Error, Sendable, Codable, Equatable, CustomStringConvertible {
    var code: SupervisorErrorCode
    var message: String

    init(_ code: SupervisorErrorCode, _ message: String) {
        self.code = code
        self.message = message
    }

    var description: String { "\(code.rawValue): \(message)" }
}
