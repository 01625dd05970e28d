import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Loads and saves `state.json` atomically.
struct StateStore: Sendable {
    let path: String

    /// The saved state, or an empty one when there is none yet.
    func load() throws -> AgentState {
        guard let data = FileManager.default.contents(atPath: path) else { return AgentState() }
        do {
            return try JSONDecoder().decode(AgentState.self, from: data)
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
