import CArchive
import Foundation
import Shared

/// The file tree of an artifact (`.tar.gz`, `.tar.zst`, `.zip`), read without extracting it, so `publish` and `plan`
/// can check every app against the very bytes they ship: the script exists, is a regular file, and what runs it. Read
/// under the agents' extraction rules (`ArchiveEntryRules`), so an artifact no agent would install is refused here.
struct ArtifactTree: Sendable {
    /// One entry of the archive.
    struct Entry: Sendable, Equatable {
        enum Kind: Sendable, Equatable {
            case file
            case directory
            case symlink(target: String)
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
    /// Refused entries an error lists; it counts the others.
    static let refusalListLimit = 20

    /// The limits of the agents' extraction that reading an artifact applies.
    struct Configuration: Sendable {
        /// Most entries, the directories their paths imply included. Default: the agents',
        /// `ArchiveEntryRules.maximumEntries`. Also bounds the memory a hostile archive takes here.
        var maxEntries: Int = ArchiveEntryRules.maximumEntries
        /// Most bytes the archive may expand to. Default: the agents', `ArchiveEntryRules.maximumTotalBytes`.
        var maxTotalBytes: Int64 = ArchiveEntryRules.maximumTotalBytes
    }

    /// Entries by normalised relative path (`bin/www`, no `./`, no trailing `/`).
    private(set) var entries: [String: Entry]

    init(entries: [String: Entry]) {
        self.entries = entries
    }

    /// Why an artifact cannot be published.
    enum ReadError: Error, CustomStringConvertible {
        /// The file cannot be opened or read as an archive (tar, tar.gz, tar.zst, zip).
        case unreadable(path: String, reason: String)
        /// Every agent would refuse to extract the artifact: the first `refusalListLimit` reasons, and how many in all.
        case refusedByAgents(path: String, refusals: [Refusal], count: Int)

        var description: String {
            switch self {
            case .unreadable(let path, let reason):
                return "\(path): cannot read the artifact: \(reason)"
            case .refusedByAgents(let path, let refusals, let count):
                let problems = count == 1 ? "1 problem" : "\(count) problems"
                var lines = ["\(path): every agent would refuse to extract this artifact (\(problems)); fix the archive and run again:"]
                lines += refusals.map { "  \($0)" }
                if count > refusals.count { lines.append("  and \(count - refusals.count) more") }
                return lines.joined(separator: "\n")
            }
        }
    }

    /// Reads the tree of the archive at `path`, applying every rule an agent applies when it extracts it (names, link
    /// targets, entry types: `ArchiveEntryRules`; and the limits of `configuration`), so that an artifact no agent can
    /// install is refused before anything is uploaded.
    ///
    /// Reads every entry's data (to count the bytes it expands to, as agents do), keeping the first `headBytes`.
    ///
    /// - Throws: `ReadError.unreadable` for a file that is not a readable archive; `ReadError.refusedByAgents` naming
    ///   every entry agents would refuse (reading stops at the entry limit).
    init(archiveAt path: String, configuration: Configuration = Configuration()) throws(ReadError) {
        guard let reader = archive_read_new() else { throw .unreadable(path: path, reason: "archive_read_new failed") }
        defer { archive_read_free(reader) }
        archive_read_support_format_tar(reader)
        archive_read_support_format_zip(reader)
        // An archive without entries is read, to be refused below as agents refuse it, rather than called unreadable.
        archive_read_support_format_empty(reader)
        archive_read_support_filter_gzip(reader)
        archive_read_support_filter_zstd(reader)
        guard archive_read_open_filename(reader, path, 256 * 1024) == ARCHIVE_OK else {
            throw .unreadable(path: path, reason: Self.message(reader))
        }
        var rules = AgentRules(configuration: configuration)
        var entries: [String: Entry] = [:]
        while !rules.stopped {
            var entry: OpaquePointer?
            let status = archive_read_next_header(reader, &entry)
            if status == ARCHIVE_EOF { break }
            guard status >= ARCHIVE_WARN, let entry else { throw .unreadable(path: path, reason: Self.message(reader)) }
            guard let rawPath = archive_entry_pathname(entry) ?? archive_entry_pathname_utf8(entry) else {
                rules.refuse(.unsafePath(entry: ArchiveEntryRules.unreadableNameLabel, reason: ArchiveEntryRules.undecodableName))
                continue
            }
            let type = archive_entry_filetype(entry) & mode_t(FERRY_AE_IFMT)
            let header = AgentRules.Header(
                path: Self.bytes(rawPath),
                fileType: UInt32(type),
                hardlink: archive_entry_hardlink(entry).map(Self.bytes),
                symlinkTarget: (archive_entry_symlink(entry) ?? archive_entry_symlink_utf8(entry)).map(Self.bytes),
                declaredSize: archive_entry_size_is_set(entry) != 0 ? Int64(archive_entry_size(entry)) : nil
            )
            // The rest of a refused entry is skipped: the next header is read past it.
            guard let admitted = rules.admit(header, in: entries) else { continue }
            var head: [UInt8] = []
            if rules.admitData(declaredSize: header.declaredSize, entry: admitted.name) {
                head = try Self.readData(reader, path: path, entry: admitted.name, rules: &rules)
            }
            switch admitted.what {
            case .hardlink(let target):
                entries[admitted.path] = entries[target]
            case .entry(let kind):
                entries[admitted.path] = Entry(kind: kind, mode: UInt32(archive_entry_perm(entry)), head: kind == .file ? head : [])
            }
            // Parent directories are implied even when the archive does not list them.
            var parent = admitted.path
            while let slash = parent.lastIndex(of: "/") {
                parent = String(parent[..<slash])
                if entries[parent] == nil { entries[parent] = Entry(kind: .directory, mode: 0o755, head: []) }
            }
        }
        if let failure = rules.failure(path: path) { throw failure }
        self.entries = entries
    }

    /// Reads the current entry's data to its end, counting its bytes against the limit (stopping there), and returns
    /// its first `headBytes` (a hole in a sparse file reads as zeros, as `archive_read_data` gives it).
    private static func readData(_ reader: OpaquePointer, path: String, entry name: String, rules: inout AgentRules) throws(ReadError) -> [UInt8] {
        var head = [UInt8](repeating: 0, count: headBytes)
        var headLength = 0
        var block: UnsafeRawPointer?
        var size = 0
        var offset: la_int64_t = 0
        while true {
            let status = archive_read_data_block(reader, &block, &size, &offset)
            if status == ARCHIVE_EOF { break }
            guard status >= ARCHIVE_WARN else {
                throw .unreadable(path: path, reason: "entry \"\(TerminalText.safe(name, keepingLineBreaks: false))\": \(message(reader))")
            }
            // A warning here is damage (libarchive's zip reader warns "ZIP bad CRC", then ends the entry): agents refuse
            // the archive.
            guard status == ARCHIVE_OK else {
                rules.refuse(.damaged(entry: name, reason: message(reader)))
                break
            }
            if offset >= 0, offset < Int64(headBytes) {
                let start = Int(offset)
                let count = min(size, headBytes - start)
                if let block, count > 0 {
                    head.withUnsafeMutableBytes { buffer in
                        UnsafeMutableRawBufferPointer(rebasing: buffer[start..<(start + count)])
                            .copyMemory(from: UnsafeRawBufferPointer(start: block, count: count))
                    }
                }
                headLength = max(headLength, start + max(count, 0))
            }
            guard rules.countData(size, entry: name) else { break }
        }
        return Array(head.prefix(headLength))
    }

    private static func bytes(_ pointer: UnsafePointer<CChar>) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: pointer, count: strlen(pointer)))
    }

    private static func message(_ archive: OpaquePointer) -> String {
        archive_error_string(archive).map { String(cString: $0) } ?? "unknown libarchive error"
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
