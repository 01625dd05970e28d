import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Loads and saves `state.json` atomically.
struct StateStore: Sendable {
    let path: String

    /// Larger than any state the agent writes (a few KB per service): a file past it is not read into memory.
    static let maximumBytes = 16 << 20

    /// The saved state, or an empty one when there is none yet (no file). A file that is there but cannot be read (a
    /// directory, no permission, an I/O error) is an error, not an empty state: starting afresh would forget the
    /// highest serial accepted (replay protection) and the release to roll back to, and the first save would overwrite
    /// the file.
    func load() throws -> AgentState {
        let bytes: [UInt8]
        do {
            guard let read = try SmallFile.read(path, limit: Self.maximumBytes) else { return AgentState() }
            bytes = read
        } catch {
            throw StateError.unreadable(path: path, reason: error.description)
        }
        guard bytes.count <= Self.maximumBytes else {
            throw StateError.unreadable(path: path, reason: "larger than \(Self.maximumBytes) bytes")
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
