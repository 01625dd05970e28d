import CArchive
import Logging
import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Extracts a release artifact (tar, tar.gz, tar.zst or zip, recognised by content, not name) into a new
/// directory, refusing anything that could write or point outside it.
///
/// The archive is written into a fresh staging directory next to the destination (`<destination>.staging-<random>`)
/// and renamed to `destination` only when every entry was accepted and written, then the parent directory is
/// fsynced. Entries are refused with a specific `ArchiveError` for: absolute paths, `..` components, paths through
/// a symbolic link, symbolic links whose target leaves the tree (resolved from the link's own directory), hard
/// links that are absolute, leave the tree or do not name a regular file extracted earlier, character and block
/// devices, FIFOs and sockets. setuid, setgid, sticky and world-writable bits are dropped; directories always
/// keep owner rwx (so the tree can be deleted later); owners are never restored. On any error the staging
/// directory is removed.
///
/// Runs on a dedicated thread (libarchive blocks); never changes the working directory (entries are given
/// absolute paths under the staging directory's real path instead).
struct ArchiveExtractor: Sendable {
    struct Configuration: Sendable {
        /// Most entries an archive may have. Default `ArchiveEntryRules.maximumEntries`, 100 000 (a big `node_modules`
        /// has a few tens of thousands); `publish` and `plan` refuse an artifact past it.
        var maxEntries: Int = ArchiveEntryRules.maximumEntries
        /// Most bytes the archive may expand to, counted while writing (a bomb is stopped mid-entry).
        /// Default `ArchiveEntryRules.maximumTotalBytes`, 2 GiB; `publish` and `plan` refuse an artifact past it.
        var maxTotalBytes: Int64 = ArchiveEntryRules.maximumTotalBytes
        /// Flush the extracted tree to disk (syncfs(2)) before renaming it into place, so a power loss never
        /// leaves a renamed release with missing data. Default `true`.
        var synchronize: Bool = true
        /// Test-only pause point for crash tests: after this many entries are written, block until the task is
        /// cancelled or the process is killed (leaving the staging directory behind). Default `nil`.
        var pauseAfterEntries: Int? = nil
        /// Free space the extraction leaves on the destination's file system: checked every MiB written, and the
        /// extraction stops with `.noSpace` below it. Default 64 MiB, the download's margin too. Without it a tree that
        /// did not fit filled the file system to its last byte before failing, and the running apps, their logs and
        /// the agent's own state saves failed with it until the partial tree was gone.
        var freeSpaceFloor: Int64 = 64 << 20

        init(
            maxEntries: Int = ArchiveEntryRules.maximumEntries,
            maxTotalBytes: Int64 = ArchiveEntryRules.maximumTotalBytes,
            synchronize: Bool = true,
            pauseAfterEntries: Int? = nil,
            freeSpaceFloor: Int64 = 64 << 20
        ) {
            self.maxEntries = maxEntries
            self.maxTotalBytes = maxTotalBytes
            self.synchronize = synchronize
            self.pauseAfterEntries = pauseAfterEntries
            self.freeSpaceFloor = freeSpaceFloor
        }
    }

    /// What an extraction produced.
    struct Summary: Sendable, Equatable {
        /// The destination's absolute path (its parent's real path plus its name).
        var path: String
        /// Entries written (the archive's `./` root entry, if any, is not counted).
        var entries: Int
        /// Bytes of file content written.
        var bytes: Int64
    }

    let configuration: Configuration
    private let logger: Logger

    init(configuration: Configuration = Configuration(), logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Extracts `archive` into `destination`, which must not exist yet (its parent must).
    ///
    /// - Throws: `ArchiveError`; nothing is left at `destination` and the staging directory is gone.
    func extract(_ archive: String, into destination: String) async throws(ArchiveError) -> Summary {
        let configuration = self.configuration
        let logger = self.logger
        let flag = CancellationFlag()
        let result = await DedicatedThread.run(cancellation: flag) {
            Extraction.run(archive: archive, destination: destination, configuration: configuration, cancellation: flag, logger: logger)
        }
        return try result.get()
    }

    /// Deletes staging directories (`*.staging-*`) that an interrupted extraction (kill -9, power loss) left in
    /// `directory`; returns their paths. Call it only when no extraction into `directory` is running.
    static func removeStagingLeftovers(in directory: String) throws(ArchiveError) -> [String] {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            return []
        }
        var removed: [String] = []
        for name in names.sorted() where name.contains(stagingMarker) {
            let path = "\(directory)/\(name)"
            if let failure = FileTree.remove(path) { throw .fileSystem(path: path, operation: "remove", errno: failure) }
            removed.append(path)
        }
        return removed
    }

    static let stagingMarker = ".staging-"
}

extension Int64 {
    /// `self + other`, stopping at `Int64.max` (sizes an archive declares are not to be trusted).
    func addingClamped(_ other: Int64) -> Int64 {
        let (sum, overflow) = addingReportingOverflow(Swift.max(other, 0))
        return overflow ? .max : sum
    }
}

/// One extraction, entirely on its dedicated thread.
private final class Extraction {
    private let archive: String
    private let staging: String
    /// `staging` + "/" as bytes, the prefix of every entry path handed to libarchive.
    private let stagingPrefix: [UInt8]
    private let configuration: ArchiveExtractor.Configuration
    private let cancellation: CancellationFlag
    private var entries = 0
    private var bytes: Int64 = 0
    /// Bytes written since the free space was last checked (`Configuration.freeSpaceFloor`).
    private var writtenSinceCheck = 0
    /// Sum of the sizes the entries read so far declare (what the tree takes, for a disk-full error).
    private var declaredBytes: Int64 = 0
    /// Relative paths known to be real directories (saves an lstat per path component per entry), up to
    /// `knownDirectoryBudget` bytes of paths: past that, parents are checked with `lstat` alone.
    private var knownDirectories = Set<[UInt8]>()
    private var knownDirectoryBytes = 0
    private static let knownDirectoryBudget = 16 << 20
    /// Relative paths of the symbolic links written, re-checked on the finished tree.
    private var symlinks: [[UInt8]] = []

    private init(archive: String, staging: String, configuration: ArchiveExtractor.Configuration, cancellation: CancellationFlag) {
        self.archive = archive
        self.staging = staging
        self.stagingPrefix = Array(staging.utf8) + [0x2f]
        self.configuration = configuration
        self.cancellation = cancellation
    }

    static func run(
        archive: String,
        destination: String,
        configuration: ArchiveExtractor.Configuration,
        cancellation: CancellationFlag,
        logger: Logger
    ) -> Result<ArchiveExtractor.Summary, ArchiveError> {
        do throws(ArchiveError) {
            let (parent, name) = try resolve(destination)
            let final = "\(parent)/\(name)"
            var info = stat()
            if lstat(final, &info) == 0 { throw .destinationExists(path: final) }
            let staging = "\(final)\(ArchiveExtractor.stagingMarker)\(Hex.encode((0..<8).map { _ in UInt8.random(in: 0...255) }))"
            guard mkdir(staging, 0o755) == 0 else { throw .fileSystem(path: staging, operation: "mkdir", errno: errno) }
            let extraction = Extraction(archive: archive, staging: staging, configuration: configuration, cancellation: cancellation)
            do throws(ArchiveError) {
                try extraction.extractAll(logger: logger)
                try extraction.verifySymlinks()
                if configuration.synchronize { try syncFileSystem(of: staging) }
                try renameNoReplace(staging, to: final)
                try syncDirectory(parent)
            } catch {
                FileTree.remove(staging)
                if case .noSpace(_, let needed, _) = error {
                    // Measured once the partial tree is gone: what the operator has to free is `needed` minus this.
                    throw .noSpace(
                        path: parent.isEmpty ? "/" : parent,
                        needed: needed,
                        available: DiskSpace.available(at: parent.isEmpty ? "/" : parent)
                    )
                }
                throw error
            }
            logger.debug(
                "Archive extracted",
                metadata: ["archive.path": "\(archive)", "archive.entries": "\(extraction.entries)", "archive.bytes": "\(extraction.bytes)"]
            )
            return .success(.init(path: final, entries: extraction.entries, bytes: extraction.bytes))
        } catch {
            return .failure(error)
        }
    }

    // MARK: Reading and writing

    private func extractAll(logger: Logger) throws(ArchiveError) {
        guard let reader = archive_read_new() else { throw .unreadable(archive: archive, reason: "archive_read_new failed") }
        defer { archive_read_free(reader) }
        archive_read_support_format_tar(reader)
        archive_read_support_format_zip(reader)
        archive_read_support_format_empty(reader)
        // ARCHIVE_WARN here would mean "through an external program": only built-in decompressors are acceptable.
        guard archive_read_support_filter_gzip(reader) == ARCHIVE_OK, archive_read_support_filter_zstd(reader) == ARCHIVE_OK else {
            throw .unreadable(archive: archive, reason: "this libarchive lacks built-in gzip or zstd support")
        }
        guard archive_read_open_filename(reader, archive, 256 * 1024) == ARCHIVE_OK else {
            throw .unreadable(archive: archive, reason: Self.message(reader))
        }
        guard let writer = archive_write_disk_new() else { throw .unreadable(archive: archive, reason: "archive_write_disk_new failed") }
        defer { archive_write_free(writer) }
        // No ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS: every path handed to libarchive is absolute (staging prefix),
        // because the alternative, chdir, is process-wide. Absolute entry paths are refused before that, in Swift.
        // No OWNER/ACL/XATTR/FFLAGS: an archive must not set owners, capabilities (security.* xattrs) or flags.
        let flags = ARCHIVE_EXTRACT_SECURE_NODOTDOT | ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME
        archive_write_disk_set_options(writer, flags)

        var headers = 0
        while true {
            if cancellation.isCancelled { throw .cancelled(archive: archive) }
            var entry: OpaquePointer?
            let status = archive_read_next_header(reader, &entry)
            if status == ARCHIVE_EOF { break }
            guard status >= ARCHIVE_WARN, let entry else {
                let reason = Self.message(reader)
                if headers == 0, archive_format(reader) == 0 { throw .unreadable(archive: archive, reason: reason) }
                throw .corrupt(archive: archive, entry: nil, reason: reason)
            }
            headers += 1
            do throws(ArchiveError) {
                try extractEntry(entry, reader: reader, writer: writer)
            } catch {
                guard case .noSpace = error else { throw error }
                // The partial tree goes before the rest of the archive is read for its sizes (decompressing it to its
                // end): the file system stayed full for all that time.
                FileTree.remove(staging)
                // What must be free for it: the whole tree, and the floor it leaves.
                let needed = declaredBytes.addingClamped(remainingDeclaredBytes(reader)).addingClamped(max(0, configuration.freeSpaceFloor))
                throw .noSpace(path: staging, needed: needed, available: nil)
            }
            if let pause = configuration.pauseAfterEntries, entries >= pause {
                logger.warning("Test pause point reached: waiting to be killed", metadata: ["archive.entries": "\(entries)"])
                while !cancellation.isCancelled { usleep(20_000) }
                throw .cancelled(archive: archive)
            }
        }
        guard entries > 0 else { throw .empty(archive: archive) }
        guard archive_write_close(writer) >= ARCHIVE_WARN else {
            throw writeFailure(entry: "(finishing directories)", writer)
        }
    }

    private func extractEntry(_ entry: OpaquePointer, reader: OpaquePointer, writer: OpaquePointer) throws(ArchiveError) {
        guard let rawPath = archive_entry_pathname(entry) ?? archive_entry_pathname_utf8(entry) else {
            throw .unsafePath(entry: ArchiveEntryRules.unreadableNameLabel, reason: ArchiveEntryRules.undecodableName)
        }
        let path = Self.bytes(rawPath)
        let name = String(decoding: path, as: UTF8.self)
        let type = archive_entry_filetype(entry) & mode_t(FERRY_AE_IFMT)
        let hardlink = archive_entry_hardlink(entry).map(Self.bytes)
        let components = try Self.components(of: path, entry: name)
        if components.isEmpty {
            // "./": the root itself, which is the staging directory.
            guard type == mode_t(FERRY_AE_IFDIR) else { throw .unsafePath(entry: name, reason: ArchiveEntryRules.emptyPath) }
            try skipData(reader, entry: name)
            return
        }
        let relative = Self.join(components)
        // A directory listed after its contents (`find -depth`, some zip tools) was counted when an earlier entry's path
        // made it.
        var existing = stat()
        let madeAlready = type == mode_t(FERRY_AE_IFDIR) && lstat(absolute(relative), &existing) == 0 && existing.st_mode & S_IFMT == S_IFDIR
        if !madeAlready {
            entries += 1
            guard entries <= configuration.maxEntries else { throw .tooManyEntries(limit: configuration.maxEntries) }
        }
        try checkParents(of: components, entry: name, counting: true)

        if let hardlink {
            let target = try Self.components(of: hardlink, entry: name, linkTarget: true)
            let targetName = String(decoding: hardlink, as: UTF8.self)
            guard !target.isEmpty else { throw .linkEscapes(entry: name, target: targetName, reason: ArchiveEntryRules.hardLinkToRoot) }
            try checkParents(of: target, entry: name)
            var info = stat()
            guard lstat(absolute(Self.join(target)), &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
                throw .linkEscapes(entry: name, target: targetName, reason: ArchiveEntryRules.hardLinkNotARegularFile)
            }
            absolute(Self.join(target)).withCString { archive_entry_copy_hardlink(entry, $0) }
        } else {
            switch ArchiveEntryRules.extractedType(fileType: UInt32(type)) {
            case .regularFile, .directory:
                break
            case .symbolicLink:
                guard let rawTarget = archive_entry_symlink(entry) ?? archive_entry_symlink_utf8(entry) else {
                    throw .linkEscapes(entry: name, target: "", reason: ArchiveEntryRules.unreadableSymlinkTarget)
                }
                try Self.checkSymlink(target: Self.bytes(rawTarget), parent: components.dropLast(), entry: name)
                symlinks.append(relative)
            case nil:
                throw .unsupportedEntryType(entry: name, type: ArchiveEntryRules.typeName(fileType: UInt32(type)))
            }
        }

        if type != mode_t(FERRY_AE_IFLNK) {
            var permissions = archive_entry_perm(entry) & 0o775  // no setuid/setgid/sticky, no world-writable
            if type == mode_t(FERRY_AE_IFDIR) { permissions |= 0o700 }
            archive_entry_set_perm(entry, permissions)
        }
        // Compared without adding: a pax header's size (`size=`, `SCHILY.realsize=`, `GNU.sparse.realsize=`) is taken by
        // libarchive as it is, up to Int64.max, and `bytes` plus it overflowed.
        if archive_entry_size_is_set(entry) != 0, archive_entry_size(entry) > configuration.maxTotalBytes - bytes {
            throw .tooLarge(entry: name, limit: configuration.maxTotalBytes)
        }
        if archive_entry_size_is_set(entry) != 0 { declaredBytes = declaredBytes.addingClamped(archive_entry_size(entry)) }
        absolute(relative).withCString { archive_entry_copy_pathname(entry, $0) }

        guard archive_write_header(writer, entry) >= ARCHIVE_WARN else {
            throw writeFailure(entry: name, writer)
        }
        if type == mode_t(FERRY_AE_IFDIR) {
            rememberDirectory(relative)
        } else {
            knownDirectories.remove(relative)
        }
        try copyData(reader: reader, writer: writer, entry: name)
        guard archive_write_finish_entry(writer) >= ARCHIVE_WARN else {
            throw writeFailure(entry: name, writer)
        }
    }

    private func copyData(reader: OpaquePointer, writer: OpaquePointer, entry name: String) throws(ArchiveError) {
        var block: UnsafeRawPointer?
        var size = 0
        var offset: la_int64_t = 0
        while true {
            if cancellation.isCancelled { throw .cancelled(archive: archive) }
            let status = archive_read_data_block(reader, &block, &size, &offset)
            if status == ARCHIVE_EOF { return }
            // A warning here is damage: libarchive's zip reader says "ZIP bad CRC" or "uncompressed data is wrong
            // size" with ARCHIVE_WARN and then ends the entry (short data is padded with zeros at its end). The
            // artifact's digest only proves it is what was signed, not that what was signed is whole.
            guard status == ARCHIVE_OK else { throw .corrupt(archive: archive, entry: name, reason: Self.message(reader)) }
            bytes += Int64(size)
            // Counted as written: a declared size can lie (zip), a bomb stops here, mid-entry.
            guard bytes <= configuration.maxTotalBytes else { throw .tooLarge(entry: name, limit: configuration.maxTotalBytes) }
            let written = archive_write_data_block(writer, block, size, offset)
            // libarchive answers a failed write(2) with ARCHIVE_WARN and its errno, and at the end of the entry extends
            // the file to its declared size with a hole: taken as a warning, a full disk gave a "complete" tree of
            // zeros. The errors of a disk that cannot take the data fail the extraction; other warnings stay warnings
            // ("too much data" for an entry longer than declared, then EFAULT for the blocks past its end: the byte
            // count above stops such an entry).
            guard written >= ARCHIVE_WARN, written == ARCHIVE_OK || !Self.isStorageFailure(archive_errno(writer)) else {
                throw writeFailure(entry: name, writer)
            }
            writtenSinceCheck += size
            if writtenSinceCheck >= 1 << 20, configuration.freeSpaceFloor > 0 {
                writtenSinceCheck = 0
                if let free = DiskSpace.available(at: staging), free < configuration.freeSpaceFloor {
                    throw .noSpace(path: staging, needed: 0, available: free)
                }
            }
        }
    }

    /// Whether `errno` says the destination's storage could not take the data (full, out of quota, read-only, failing).
    private static func isStorageFailure(_ errno: Int32) -> Bool {
        DiskSpace.isFull(errno) || errno == EIO || errno == EFBIG || errno == EROFS
    }

    /// The error for a write libarchive could not do: `.noSpace` when the file system is full (`needed` is filled in
    /// by the caller, which can read the rest of the archive), `.writeFailed` otherwise.
    private func writeFailure(entry name: String, _ writer: OpaquePointer) -> ArchiveError {
        if DiskSpace.isFull(archive_errno(writer)) { return .noSpace(path: staging, needed: 0, available: nil) }
        return .writeFailed(entry: name, reason: Self.message(writer))
    }

    /// The sizes the entries after the current one declare, read from their headers without writing anything (for a
    /// disk-full error's "need N MB"). Stops at the first unreadable header and after `maxEntries`.
    private func remainingDeclaredBytes(_ reader: OpaquePointer) -> Int64 {
        var total: Int64 = 0
        for _ in 0..<configuration.maxEntries {
            var entry: OpaquePointer?
            guard archive_read_next_header(reader, &entry) >= ARCHIVE_WARN, let entry else { break }
            if archive_entry_size_is_set(entry) != 0 { total = total.addingClamped(archive_entry_size(entry)) }
        }
        return total
    }

    private func skipData(_ reader: OpaquePointer, entry name: String) throws(ArchiveError) {
        guard archive_read_data_skip(reader) >= ARCHIVE_WARN else {
            throw .corrupt(archive: archive, entry: name, reason: Self.message(reader))
        }
    }

    // MARK: Checks

    /// Refuses a path whose directories include a symbolic link (libarchive would too; this names the link).
    /// - Parameter counting: the directories missing are about to be created for the entry (libarchive makes an
    ///   entry's parents): each counts as an entry, or an archive of a few deep paths (`x/a/a/…/a/f`, a thousand levels
    ///   each) made millions of directories within its entry limit.
    private func checkParents(of components: [[UInt8]], entry name: String, counting: Bool = false) throws(ArchiveError) {
        var prefix: [UInt8] = []
        for (depth, component) in components.dropLast().enumerated() {
            if !prefix.isEmpty { prefix.append(0x2f) }
            prefix += component
            if knownDirectories.contains(prefix) { continue }
            var info = stat()
            guard lstat(absolute(prefix), &info) == 0 else {
                // The rest does not exist yet.
                if counting {
                    entries += components.count - 1 - depth
                    guard entries <= configuration.maxEntries else { throw .tooManyEntries(limit: configuration.maxEntries) }
                }
                return
            }
            switch info.st_mode & S_IFMT {
            case S_IFLNK:
                throw .unsafePath(entry: name, reason: ArchiveEntryRules.passesThroughSymlink(String(decoding: prefix, as: UTF8.self)))
            case S_IFDIR:
                rememberDirectory(prefix)
            default:
                throw .unsafePath(entry: name, reason: ArchiveEntryRules.notADirectory(String(decoding: prefix, as: UTF8.self)))
            }
        }
    }

    private func rememberDirectory(_ path: [UInt8]) {
        guard knownDirectoryBytes + path.count <= Self.knownDirectoryBudget, knownDirectories.insert(path).inserted else { return }
        knownDirectoryBytes += path.count
    }

    /// Every symbolic link, resolved on the finished tree, must stay inside it (dangling links are allowed).
    /// Catches chains the per-entry lexical check cannot see, such as `a -> .` then `b -> a/..`.
    private func verifySymlinks() throws(ArchiveError) {
        for link in symlinks {
            let path = absolute(link)
            guard let resolved = realpath(path, nil) else { continue }
            let target = String(cString: resolved)
            free(resolved)
            if target != staging, !target.hasPrefix(staging + "/") {
                var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
                let length = readlink(path, &buffer, buffer.count - 1)
                let text = length > 0 ? String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
                throw .linkEscapes(entry: String(decoding: link, as: UTF8.self), target: text, reason: "resolves outside the extracted tree")
            }
        }
    }

    /// Splits an entry path into components (`ArchiveEntryRules.components(of:)`), refusing absolute paths and `..`;
    /// `.` and empty components vanish. A refused hard link target (`linkTarget`) is a `.linkEscapes`.
    private static func components(of path: [UInt8], entry name: String, linkTarget: Bool = false) throws(ArchiveError) -> [[UInt8]] {
        do throws(ArchiveEntryRules.Refusal) {
            return try ArchiveEntryRules.components(of: path)
        } catch {
            let refusal: ArchiveError =
                linkTarget
                ? .linkEscapes(entry: name, target: String(decoding: path, as: UTF8.self), reason: error.reason)
                : .unsafePath(entry: name, reason: error.reason)
            throw refusal
        }
    }

    /// A symbolic link's target, taken relative to the link's directory, must not be absolute, may climb (`..`) only
    /// at its start and not above the tree's root, and then only names entries (`ArchiveEntryRules.checkSymlink`, which
    /// says why). With climbs only at the start, from a directory that is not a link (`checkParents`), every link
    /// resolves inside the tree, through any chain of links.
    private static func checkSymlink(target: [UInt8], parent: ArraySlice<[UInt8]>, entry name: String) throws(ArchiveError) {
        do throws(ArchiveEntryRules.Refusal) {
            try ArchiveEntryRules.checkSymlink(target: target, parentDepth: parent.count)
        } catch {
            throw .linkEscapes(entry: name, target: String(decoding: target, as: UTF8.self), reason: error.reason)
        }
    }

    // MARK: Paths and file system

    private func absolute(_ relative: [UInt8]) -> String {
        String(decoding: stagingPrefix + relative, as: UTF8.self)
    }

    private static func join(_ components: [[UInt8]]) -> [UInt8] {
        Array(components.joined(separator: [0x2f]))
    }

    private static func bytes(_ pointer: UnsafePointer<CChar>) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: pointer, count: strlen(pointer)))
    }

    private static func message(_ archive: OpaquePointer) -> String {
        archive_error_string(archive).map { String(cString: $0) } ?? "unknown libarchive error"
    }

    /// The destination's parent, resolved to its real path (libarchive's symlink check walks the whole path),
    /// and its last component.
    private static func resolve(_ destination: String) throws(ArchiveError) -> (parent: String, name: String) {
        var trimmed = Substring(destination)
        while trimmed.count > 1, trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
        let slash = trimmed.lastIndex(of: "/")
        let name = String(slash.map { trimmed[trimmed.index(after: $0)...] } ?? trimmed)
        let parent = slash.map { $0 == trimmed.startIndex ? "/" : String(trimmed[..<$0]) } ?? "."
        guard !name.isEmpty, name != ".", name != ".." else {
            throw .fileSystem(path: destination, operation: "extract into", errno: EINVAL)
        }
        guard let resolved = realpath(parent, nil) else { throw .fileSystem(path: parent, operation: "realpath", errno: errno) }
        defer { free(resolved) }
        let real = String(cString: resolved)
        return (real == "/" ? "" : real, name)
    }

    private static func renameNoReplace(_ source: String, to target: String) throws(ArchiveError) {
        #if os(Linux)
        let renamed = ferry_rename_noreplace(source, target) == 0
        #else
        var info = stat()
        let renamed = lstat(target, &info) != 0 && rename(source, target) == 0
        #endif
        guard renamed else {
            if errno == EEXIST { throw .destinationExists(path: target) }
            throw .fileSystem(path: target, operation: "rename", errno: errno)
        }
    }

    private static func syncFileSystem(of path: String) throws(ArchiveError) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .fileSystem(path: path, operation: "open", errno: errno) }
        defer { close(fd) }
        #if os(Linux)
        let synced = ferry_syncfs(fd) == 0
        #else
        let synced = fsync(fd) == 0
        #endif
        guard synced else { throw .fileSystem(path: path, operation: "syncfs", errno: errno) }
    }

    private static func syncDirectory(_ path: String) throws(ArchiveError) {
        let fd = open(path.isEmpty ? "/" : path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .fileSystem(path: path, operation: "open", errno: errno) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw .fileSystem(path: path, operation: "fsync", errno: errno) }
    }
}
