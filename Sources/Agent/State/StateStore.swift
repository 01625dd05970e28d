import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Loads and saves `state.json` atomically.
struct StateStore: Sendable {
    let path: String
    /// The services the agent runs: what the largest state it writes can hold (`maximumBytes(services:)`).
    var services = 1

    /// The limit with no service counted: a file past `maximumBytes(services:)` is not read into memory.
    static let maximumBytes = 16 << 20

    /// Larger than any state the agent writes for `services` services: each keeps up to three releases (applied,
    /// previous, pending), each with its payload of up to `Limits.releasePayloadBytes` (base64 in the file, a third
    /// more, and `/` escaped), and its failures with their diagnoses. A fixed 16 MiB was less than four services with
    /// large releases during an install: the agent wrote a state it then refused to start with.
    static func maximumBytes(services: Int) -> Int {
        maximumBytes + max(1, min(services, 1024)) * (3 * Limits.releasePayloadBytes * 3 / 2 + (4 << 20))
    }

    /// The saved state, or an empty one when there is none yet (no file). A file that is there but cannot be read (a
    /// directory, no permission, an I/O error) is an error, not an empty state: starting afresh would forget the
    /// highest serial accepted (replay protection) and the release to roll back to, and the first save would overwrite
    /// the file.
    func load() throws -> AgentState {
        let bytes: [UInt8]
        do {
            guard let read = try SmallFile.read(path, limit: Self.maximumBytes(services: services)) else { return AgentState() }
            bytes = read
        } catch {
            throw StateError.unreadable(path: path, reason: error.description)
        }
        guard bytes.count <= Self.maximumBytes(services: services) else {
            throw StateError.unreadable(path: path, reason: "larger than \(Self.maximumBytes(services: services)) bytes")
        }
        do {
            return try JSONDecoder().decode(AgentState.self, from: Data(bytes))
        } catch {
            throw StateError.unreadable(path: path, reason: "\(error)")
        }
    }

    /// Writes `state` (temp file + fsync + rename + fsync of the directory).
    func save(_ state: AgentState) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        try AtomicFile.write(Array(try encoder.encode(state)), to: path, mode: 0o600)
    }
}

/// The state file could not be used.
enum StateError: Error, CustomStringConvertible {
    case unreadable(path: String, reason: String)

    var description: String {
        switch self {
        case .unreadable(let path, let reason):
            "state file \(path) is unreadable (\(reason)); move it away to start from scratch"
        }
    }
}
