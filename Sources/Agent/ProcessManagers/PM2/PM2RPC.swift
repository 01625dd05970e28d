import Shared

/// Reads PM2's process table from its daemon's RPC socket, `$PM2_HOME/rpc.sock`, the way the `pm2` CLI itself does
/// (`Client.executeRemote('getMonitorData')` in PM2's lib/Client.js), without starting the CLI.
///
/// `pm2 jlist` is a Node.js process that loads PM2, connects to that socket, asks `getMonitorData` and prints
/// `JSON.stringify` of the answer: about 0.3 s of CPU and 60 MB of memory on a small instance, for every drift check
/// and every status report. The answer read here is the same array, so `PM2ProcessTable` reads it the same way.
///
/// The wire format is pm2-axon's request socket with pm2-axon-rpc on top (PM2 7 vendors both under `modules/`):
/// every message is one amp frame — a byte holding the protocol version (1) in its high nibble and the number of
/// parts in its low nibble, then each part as a 32-bit big-endian length and its bytes. A part is `j:` and JSON or
/// `s:` and a string. A call is `j:{"type":"call","method":…,"args":[…]}` followed by `s:<id>`; the answer is
/// `j:{"args":[…]}` (or `j:{"error":…}`) followed by the same id.
///
/// Only the table is read this way. Everything that changes PM2's state (start, reload, delete, save) still goes
/// through the CLI, and so does a read when no daemon answers here: `pm2 jlist` starts one.
///
/// This file is the protocol (no I/O; `scripts/fuzz pm2rpc` feeds it arbitrary answers); the socket is in
/// PM2RPC+Socket.swift.
enum PM2RPC {
    /// Why the socket gave no table. `PM2ProcessManager` then asks `pm2 jlist`.
    enum Failure: Error, Sendable, Equatable, CustomStringConvertible {
        /// Nothing listens on the socket (`ENOENT`, `ECONNREFUSED`): no daemon runs for this home.
        case noDaemon(errno: Int32)
        /// A socket call failed.
        case socket(operation: String, errno: Int32)
        /// No whole answer came within the timeout.
        case timedOut(Duration)
        /// The daemon closed the connection after `received` bytes, before a whole answer.
        case closed(received: Int)
        /// The answer announced more than `limit` bytes.
        case tooLarge(limit: Int)
        /// The answer is not what pm2-axon-rpc sends.
        case malformed(String)
        /// The daemon answered with an error (`{"error": …}`).
        case daemonError(String)

        var description: String {
            switch self {
            case .noDaemon(let code): "no PM2 daemon listens (\(SystemErrorText.describe(code)))"
            case .socket(let operation, let code): "\(operation): \(SystemErrorText.describe(code))"
            case .timedOut(let timeout): "no answer within \(timeout)"
            case .closed(let received): "the daemon closed the connection after \(received) byte(s), before a whole answer"
            case .tooLarge(let limit): "the answer is longer than \(limit) bytes"
            case .malformed(let reason): "not a pm2-axon-rpc answer: \(reason)"
            case .daemonError(let message): "the daemon refused getMonitorData: \(message)"
            }
        }
    }

    /// The amp protocol version pm2-axon speaks.
    static let version: UInt8 = 1
    /// How long a table read may take at most (less when the pm2 command timeout is shorter). The daemon answers in
    /// milliseconds; one that does not is left to `pm2 jlist` and its own timeout.
    static let defaultTimeout = Duration.seconds(10)

    /// One call as an amp frame: `j:{"type":"call","method":<method>,"args":[{}]}` and `s:<id>`.
    static func call(method: String, id: String) -> [UInt8] {
        let body = JSONValue.object(["type": .string("call"), "method": .string(method), "args": .array([.object([:])])])
        return frame([Array("j:".utf8) + body.encodedBytes(), Array("s:\(id)".utf8)])
    }

    /// `parts` as one amp frame (at most 15 parts, each shorter than 4 GiB).
    static func frame(_ parts: [[UInt8]]) -> [UInt8] {
        precondition(parts.count <= 15, "an amp frame holds at most 15 parts")
        var bytes: [UInt8] = [version << 4 | UInt8(parts.count)]
        for part in parts {
            let length = UInt32(part.count)
            bytes += [UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)]
            bytes += part
        }
        return bytes
    }

    /// The parts of the amp frame at the start of `bytes`, and its length; `nil` while the frame is incomplete.
    ///
    /// - Throws: `.malformed` for another protocol version or a frame without parts, `.tooLarge` as soon as the
    ///   lengths read so far pass `limit`.
    static func frame(in bytes: [UInt8], limit: Int) throws(Failure) -> (parts: [ArraySlice<UInt8>], length: Int)? {
        guard let meta = bytes.first else { return nil }
        guard meta >> 4 == version else { throw .malformed("amp protocol version \(meta >> 4), expected \(version)") }
        let count = Int(meta & 0x0F)
        guard count > 0 else { throw .malformed("a frame without parts") }
        var parts: [ArraySlice<UInt8>] = []
        var offset = 1
        for _ in 0..<count {
            guard bytes.count >= offset + 4 else { return nil }
            let length = bytes[offset..<offset + 4].reduce(0) { $0 << 8 | Int($1) }
            offset += 4
            // Lengths are below 2^32 and offsets below `limit`, so nothing here can overflow.
            guard length <= limit - offset else { throw .tooLarge(limit: limit) }
            guard bytes.count >= offset + length else { return nil }
            parts.append(bytes[offset..<offset + length])
            offset += length
        }
        return (parts, offset)
    }

    /// The table in the parts of an answer to the call `id`.
    static func table(fromAnswer parts: [ArraySlice<UInt8>], id: String) throws(Failure) -> [JSONValue] {
        guard parts.count == 2 else { throw .malformed("\(parts.count) part(s), expected 2") }
        guard parts[1].elementsEqual("s:\(id)".utf8) else {
            throw .malformed("the answer is for call \(PM2ProcessTable.excerpt(Array(parts[1]), limit: 60)), not \(id)")
        }
        guard parts[0].starts(with: "j:".utf8) else {
            throw .malformed("the answer is not JSON: \(PM2ProcessTable.excerpt(Array(parts[0]), limit: 60))")
        }
        let answer: JSONValue
        do {
            answer = try JSONValue.parse(parts[0].dropFirst(2), loneSurrogates: .replace)
        } catch {
            throw .malformed("the answer's JSON: \(error)")
        }
        guard case .object(let members) = answer else { throw .malformed("the answer is a JSON \(answer.typeName), not an object") }
        if let error = members["error"] {
            if case .string(let message) = error { throw .daemonError(message) }
            throw .daemonError(String(decoding: error.encodedBytes(), as: UTF8.self))
        }
        guard case .array(let arguments)? = members["args"], let first = arguments.first else {
            throw .malformed("the answer has no \"args\"")
        }
        guard case .array(let elements) = first else { throw .malformed("the table is a JSON \(first.typeName), not an array") }
        return elements
    }
}
