import Glibc
import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The daemon's app table on disk (`apps.json`): what to run again after the daemon restarts (resurrect), and which
/// processes the previous daemon left behind.
struct AppTableFile: Sendable {
    /// Version of the file layout.
    static let currentVersion = 1

    /// The saved table.
    struct Table: Sendable, Codable, Equatable {
        var version: Int = AppTableFile.currentVersion
        var apps: [App] = []
        /// The boot the processes were recorded in (`BootID`); `nil` in tables written before boots were told apart.
        var bootID: String?
    }

    /// One saved app.
    struct App: Sendable, Codable, Equatable {
        var spec: AppSpec
        var instances: [Instance]
    }

    /// One saved instance: its stable `pm_id` and the process that ran it when the table was written.
    struct Instance: Sendable, Codable, Equatable {
        var pmId: Int
        /// Pid of the live process, if any.
        var pid: Int32?
        /// `/proc` start time of that process, so a reused pid is never mistaken for it.
        var startTicks: UInt64?
    }

    let path: String

    /// Reads the table; an absent file is an empty table. Throws `.appTable` for a file that cannot be read or parsed.
    func load() throws(SupervisorError) -> Table {
        // A table of 64 apps with full env maps stays far below this; more means the file is not ours.
        let limit = 64 << 20
        let read: [UInt8]?
        do throws(SmallFile.Failure) {
            read = try SmallFile.read(path, limit: limit)
        } catch {
            throw SupervisorError(error)
        }
        guard let bytes = read else { return Table() }
        guard bytes.count <= limit else { throw .appTable(path: path, reason: "larger than 64 MiB") }
        do {
            let table = try JSONDecoder().decode(Table.self, from: Data(bytes))
            guard table.version == Self.currentVersion else {
                throw SupervisorError.appTable(path: path, reason: "unsupported version \(table.version)")
            }
            return table
        } catch let error as SupervisorError {
            throw error
        } catch {
            throw .appTable(path: path, reason: SupervisorRequest.describe(error))
        }
    }

    /// Writes the table atomically: temp file, fsync, rename over the old one, fsync the directory. Mode 0600, since
    /// app env maps may hold secrets.
    func save(_ table: Table) throws(SupervisorError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let bytes: Data
        do {
            bytes = try encoder.encode(table)
        } catch {
            throw .appTable(path: path, reason: "cannot encode: \(error)")
        }
        do {
            try AtomicFile.write(Array(bytes), to: path, mode: 0o600)
        } catch {
            throw .path(operation: error.operation, path: error.path, errno: error.errno)
        }
    }
}
