import CArchive
import Foundation

/// The file tree of an artifact (`.tar.gz`, `.tar.zst`, `.zip`), read without extracting it, so `publish` and `plan`
/// can check every app against the very bytes they ship: the script exists, is a regular file, and what runs it.
struct ArtifactTree: Sendable {
    /// One entry of the archive.
    struct Entry: Sendable, Equatable {
        enum Kind: Sendable, Equatable {
            case file
            case directory
            case symlink(target: String)
            case other
        }

        var kind: Kind
        /// Permission bits (`0o755`).
        var mode: UInt32
        /// The first bytes of a regular file (at most `ArtifactTree.headBytes`), for PM2's binary test and shebangs.
        var head: [UInt8]

        var isExecutable: Bool { mode & 0o111 != 0 }
    }

    /// How much of each file is kept: PM2's `isbinaryfile` reads 512 bytes.
    static let headBytes = 512
    /// Entries read at most (a bound on memory for a hostile archive).
    static let maximumEntries = 500_000

    /// Entries by normalised relative path (`bin/www`, no `./`, no trailing `/`).
    private(set) var entries: [String: Entry]

    init(entries: [String: Entry]) {
        self.entries = entries
    }

    /// Why an artifact could not be read.
    struct ReadError: Error, CustomStringConvertible {
        var path: String
        var reason: String
        var description: String { "\(path): cannot read the artifact: \(reason)" }
    }

    /// Reads the tree of the archive at `path`.
    init(archiveAt path: String) throws(ReadError) {
        guard let reader = archive_read_new() else { throw ReadError(path: path, reason: "archive_read_new failed") }
        defer { archive_read_free(reader) }
        archive_read_support_format_tar(reader)
        archive_read_support_format_zip(reader)
        archive_read_support_filter_gzip(reader)
        archive_read_support_filter_zstd(reader)
        guard archive_read_open_filename(reader, path, 256 * 1024) == ARCHIVE_OK else {
            throw ReadError(path: path, reason: archive_error_string(reader).map { String(cString: $0) } ?? "unknown error")
        }
        var entries: [String: Entry] = [:]
        var entry: OpaquePointer?
        while true {
            let status = archive_read_next_header(reader, &entry)
            if status == ARCHIVE_EOF { break }
            guard status >= ARCHIVE_WARN, let entry else {
                throw ReadError(path: path, reason: archive_error_string(reader).map { String(cString: $0) } ?? "unreadable entry")
            }
            guard entries.count < Self.maximumEntries else {
                throw ReadError(path: path, reason: "more than \(Self.maximumEntries) entries")
            }
            guard let raw = archive_entry_pathname(entry) else { continue }
            let name = Self.normalise(String(cString: raw))
            let type = archive_entry_filetype(entry) & mode_t(FERRY_AE_IFMT)
            let mode = UInt32(archive_entry_perm(entry))
            var head: [UInt8] = []
            let kind: Entry.Kind
            switch type {
            case mode_t(FERRY_AE_IFREG):
                kind = .file
                head = [UInt8](repeating: 0, count: Self.headBytes)
                let count = head.withUnsafeMutableBytes { archive_read_data(reader, $0.baseAddress, Self.headBytes) }
                head = count > 0 ? Array(head.prefix(count)) : []
            case mode_t(FERRY_AE_IFDIR):
                kind = .directory
            case mode_t(FERRY_AE_IFLNK):
                kind = .symlink(target: archive_entry_symlink(entry).map { String(cString: $0) } ?? "")
            default:
                kind = .other
            }
            if let hardlink = archive_entry_hardlink(entry), let original = entries[Self.normalise(String(cString: hardlink))] {
                entries[name] = original
            } else if !name.isEmpty {
                entries[name] = Entry(kind: kind, mode: mode, head: head)
            }
            // Parent directories are implied even when the archive does not list them.
            var parent = name
            while let slash = parent.lastIndex(of: "/") {
                parent = String(parent[..<slash])
                if entries[parent] == nil { entries[parent] = Entry(kind: .directory, mode: 0o755, head: []) }
            }
        }
        self.entries = entries
    }

    /// `./a//b/` → `a/b`.
    static func normalise(_ path: String) -> String {
        path.split(separator: "/").filter { $0 != "." }.joined(separator: "/")
    }

    /// What is at `path` (relative to the root), following symlinks inside the tree; `nil` when nothing is there or a
    /// link leaves the tree or loops.
    func resolve(_ path: String) -> (path: String, entry: Entry)? {
        var components: [Substring] = []
        var pending = Array(path.split(separator: "/").reversed())
        var hops = 0
        while let part = pending.popLast() {
            switch part {
            case ".": continue
            case "..":
                guard !components.isEmpty else { return nil }
                components.removeLast()
                continue
            default: break
            }
            components.append(part)
            let current = components.joined(separator: "/")
            guard let entry = entries[current] else { return nil }
            if case .symlink(let target) = entry.kind {
                hops += 1
                guard hops <= 40, !target.hasPrefix("/") else { return nil }
                components.removeLast()
                pending.append(contentsOf: target.split(separator: "/").reversed())
            }
        }
        let resolved = components.joined(separator: "/")
        if resolved.isEmpty { return ("", Entry(kind: .directory, mode: 0o755, head: [])) }
        return entries[resolved].map { (resolved, $0) }
    }
}
