import Shared

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why an archive was not extracted. Entry names are the archive's own paths. Whatever the error, the staging
/// directory was removed and nothing outside it was written.
enum ArchiveError: Error, CustomStringConvertible {
    /// The destination already exists (a release directory is created once and never modified).
    case destinationExists(path: String)
    /// The file cannot be opened or is not a supported archive (tar, tar.gz, tar.zst, zip).
    case unreadable(archive: String, reason: String)
    /// The archive or its compression is damaged or truncated.
    case corrupt(archive: String, entry: String?, reason: String)
    /// The archive has no entries.
    case empty(archive: String)
    /// An absolute path, a `..` component, a path through a symbolic link, or an unusable name.
    case unsafePath(entry: String, reason: String)
    /// A symbolic or hard link pointing outside the extracted tree (or at something it may not point at).
    case linkEscapes(entry: String, target: String, reason: String)
    /// Devices, FIFOs and sockets are never extracted.
    case unsupportedEntryType(entry: String, type: String)
    /// More entries than `Configuration.maxEntries`.
    case tooManyEntries(limit: Int)
    /// More uncompressed bytes than `Configuration.maxTotalBytes` (counted as written).
    case tooLarge(entry: String, limit: Int64)
    /// libarchive could not create or write the entry.
    case writeFailed(entry: String, reason: String)
    /// The file system holding the destination filled up: `needed` is what the whole tree takes (the entries' sizes
    /// as the archive declares them), `available` what was free once the partial tree was removed.
    case noSpace(path: String, needed: Int64, available: Int64?)
    /// A file operation outside libarchive failed (staging directory, rename, sync).
    case fileSystem(path: String, operation: String, errno: Int32)
    /// The calling task was cancelled.
    case cancelled(archive: String)

    /// The case without its details, for tables and metrics.
    enum Kind: String, Sendable {
        case destinationExists, unreadable, corrupt, empty, unsafePath, linkEscapes, unsupportedEntryType
        case tooManyEntries, tooLarge, writeFailed, noSpace, fileSystem, cancelled
    }

    var kind: Kind {
        switch self {
        case .destinationExists: .destinationExists
        case .unreadable: .unreadable
        case .corrupt: .corrupt
        case .empty: .empty
        case .unsafePath: .unsafePath
        case .linkEscapes: .linkEscapes
        case .unsupportedEntryType: .unsupportedEntryType
        case .tooManyEntries: .tooManyEntries
        case .tooLarge: .tooLarge
        case .writeFailed: .writeFailed
        case .noSpace: .noSpace
        case .fileSystem: .fileSystem
        case .cancelled: .cancelled
        }
    }

    /// The archive entry the error is about, if any.
    var entry: String? {
        switch self {
        case .corrupt(_, let entry, _): entry
        case .unsafePath(let entry, _), .linkEscapes(let entry, _, _), .unsupportedEntryType(let entry, _),
            .tooLarge(let entry, _), .writeFailed(let entry, _):
            entry
        default: nil
        }
    }

    var description: String {
        switch self {
        case .destinationExists(let path): "\(path) already exists; a release directory is never extracted over"
        case .unreadable(let archive, let reason): "\(archive): not a readable archive: \(reason)"
        case .corrupt(let archive, let entry, let reason):
            "\(archive): corrupt or truncated archive\(entry.map { " at entry \"\($0)\"" } ?? ""): \(reason)"
        case .empty(let archive): "\(archive): the archive has no entries"
        case .unsafePath(let entry, let reason): "archive entry \"\(entry)\": unsafe path: \(reason)"
        case .linkEscapes(let entry, let target, let reason): "archive entry \"\(entry)\" -> \"\(target)\": \(reason)"
        case .unsupportedEntryType(let entry, let type): "archive entry \"\(entry)\": a \(type) is never extracted"
        case .tooManyEntries(let limit): "the archive has more than \(limit) entries (the directories its paths imply included)"
        case .tooLarge(let entry, let limit): "archive entry \"\(entry)\": the archive expands to more than \(limit) bytes"
        case .writeFailed(let entry, let reason): "archive entry \"\(entry)\": cannot extract: \(reason)"
        case .noSpace(let path, let needed, let available):
            DiskSpace.message(path: path, needed: needed, available: available, detail: "the release expands to \(needed) bytes")
        case .fileSystem(let path, let operation, let errno): "\(path): \(operation) failed: \(String(cString: strerror(errno)))"
        case .cancelled(let archive): "\(archive): extraction cancelled"
        }
    }
}
