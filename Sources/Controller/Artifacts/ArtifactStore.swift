import Foundation
import Hummingbird
import Logging
import NIOPosix
import Shared
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Content-addressed artifact files: `<directory>/<sha256 hex>`, written once, never modified.
///
/// Uploads stream into `<directory>/tmp/` while being hashed, are fsynced, then renamed into place, so a crash or an
/// aborted upload never leaves a partial file under a digest name; what a killed upload left in `tmp/` is removed at
/// start. Directories are 0700 and files 0600, whatever the umask.
///
/// With several controllers on one PostgreSQL database (`Configuration.shared`), an upload is also copied into the
/// database (in chunks, in one transaction) before it is acknowledged, and the directory becomes this controller's
/// cache: an artifact another controller received is fetched from the database chunk by chunk into `tmp/`, checked
/// against its digest and renamed into place the first time it is asked for, then served from the file (Range and
/// all). A digest names its content, so a cached file never goes stale. No step holds a whole artifact in memory.
///
/// A copy is checked against its digest the first time this process answers for it (and again whenever the file is
/// another one: a new inode, size or modification time): one whose bytes are not what its name says (a flipped bit
/// on a damaged disk, a restore from a bad backup) is removed and logged, so it is answered 404, the next `publish`
/// uploads it again (or, with a shared database, it is fetched again from there). A copy of the right size used to be
/// served for good, and every agent refused it.
struct ArtifactStore: Sendable {
    /// Where artifacts live and how large one may be.
    struct Configuration: Sendable {
        /// The artifact directory. Default: `<data-dir>/artifacts`.
        var directory: String
        /// Largest artifact accepted, in bytes. Default 4 GiB.
        var maximumBytes: Int64 = 4 << 30
        /// The database every controller shares, holding every artifact's bytes (PostgreSQL). Default `nil`: the
        /// directory is the only copy (one controller).
        var shared: (any ArtifactBlobStore)? = nil
        /// Size of the chunks artifacts are stored in, in the shared database. Default 1 MiB.
        var sharedChunkBytes: Int = 1 << 20
        /// How long a request waits for the check of a copy (`ArtifactStore.availability`) before it answers without it.
        /// Default 20 s, under the CLI's 60 s and an agent's 30 s without a byte: a copy of a few hundred MB is checked
        /// within it, a 4 GiB one on a slow disk is not.
        var checkWait: Duration = .seconds(20)
        /// Awaited before a copy is hashed: tests hold a check there to see the requests meanwhile. Default: nothing.
        var beforeCheck: @Sendable () async -> Void = {}
        /// Where a damaged copy is reported. Default: a logger of its own (`ferry.artifacts`).
        var logger = Logger(label: "ferry.artifacts")

        init(directory: String, maximumBytes: Int64 = 4 << 30, shared: (any ArtifactBlobStore)? = nil, logger: Logger? = nil) {
            self.directory = directory
            self.maximumBytes = maximumBytes
            self.shared = shared
            if let logger { self.logger = logger }
        }
    }

    /// The result of an upload.
    struct Stored: Sendable, Equatable {
        var digest: SHA256Digest
        var size: Int64
        /// `false` when the same content was already stored (uploads are idempotent).
        var created: Bool
    }

    let configuration: Configuration
    /// Fetches from the shared database in progress, so concurrent requests for one artifact fetch it once.
    private let fetches = SharedArtifactFetches()
    /// Shares into the database in progress (`availableSize`), so concurrent requests share an artifact once.
    private let shares = SharedArtifactFetches()
    /// Artifacts this controller holds that the shared database is known to hold too.
    let knownShared = KnownDigests()
    /// Digests publishes and uploads are using and digests a prune is removing (`ArtifactStore+Retention.swift`).
    let retention = ArtifactRetentionLocks()
    /// Copies whose bytes this process hashed and found to match their digest, with the file each was.
    private let checkedCopies = CheckedCopies()
    /// Checks of copies in progress, so concurrent requests for one artifact hash it once.
    private let checks = ArtifactChecks()

    /// Creates the directories (0700), removes the temporary files of uploads a crash or kill interrupted, and makes
    /// stored artifacts 0600 (older versions left them to the umask).
    init(_ configuration: Configuration) throws(ArtifactStoreError) {
        self.configuration = configuration
        for directory in [configuration.directory, temporaryDirectory] {
            do {
                try DataDirectory.prepare(directory)
            } catch {
                throw .io(path: directory, reason: error.reason)
            }
        }
        // Only one server uses a data directory, and it has not started yet: nothing in tmp/ is still being written.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: temporaryDirectory)) ?? [] {
            let path = "\(temporaryDirectory)/\(name)"
            guard unlink(path) == 0 || errno == ENOENT else { throw .io(path: path, reason: String(cString: strerror(errno))) }
        }
        for name in (try? FileManager.default.contentsOfDirectory(atPath: configuration.directory)) ?? [] where SHA256Digest(hex: name) != nil {
            let path = "\(configuration.directory)/\(name)"
            var info = stat()
            guard lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, info.st_mode & 0o777 != 0o600 else { continue }
            guard chmod(path, 0o600) == 0 else { throw .io(path: path, reason: String(cString: strerror(errno))) }
        }
    }

    var temporaryDirectory: String { configuration.directory + "/tmp" }

    /// The file of an artifact (which may not exist).
    func path(for digest: SHA256Digest) -> String { "\(configuration.directory)/\(digest.hex)" }

    /// The size of a stored artifact, or `nil` when it is not stored. An empty file is not an artifact (uploads refuse
    /// empty bodies): one left in the directory (a restore, a damaged disk) counts as absent, so it is answered 404,
    /// fetched again from the shared database, and replaced by the next upload of those bytes.
    func size(of digest: SHA256Digest) -> Int64? {
        var info = stat()
        guard stat(path(for: digest), &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, info.st_size > 0 else { return nil }
        return Int64(info.st_size)
    }

    /// Streams `body` to disk while hashing it, then files it under its digest.
    ///
    /// Chunks are hashed as they arrive and written in batches of at most `writeBatchBytes` on NIO's blocking-I/O
    /// thread pool, so neither the event loops nor Swift's cooperative threads wait for the disk (or the final fsync).
    ///
    /// - Parameters:
    ///   - expected: when given, the digest the content must have.
    ///   - declaredSize: the upload's `Content-Length`, when it has one: refused at once when it cannot fit, and named
    ///     as what is needed when the disk fills up during the upload.
    ///   - admit: called once every byte is in and checked, before the bytes take their name; what it throws ends the
    ///     upload with nothing kept (the route checks the uploader's token again there).
    /// - Throws: `ArtifactStoreError.tooLarge` past `maximumBytes`, `.digestMismatch`, `.empty`, `.noSpace` (nothing of
    ///   the upload is kept), `.io`.
    func store<Body: AsyncSequence>(
        _ body: Body,
        expected: SHA256Digest?,
        declaredSize: Int64? = nil,
        admit: () async throws -> Void = {}
    ) async throws -> Stored where Body.Element == ByteBuffer {
        if let declaredSize, let available = DiskSpace.available(at: configuration.directory), declaredSize > available {
            throw ArtifactStoreError.noSpace(path: configuration.directory, needed: declaredSize, available: available)
        }
        let temporary = "\(temporaryDirectory)/upload-\(UUID().uuidString)"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            if DiskSpace.isFull(errno) {
                throw ArtifactStoreError.noSpace(
                    path: configuration.directory,
                    needed: declaredSize ?? 0,
                    available: DiskSpace.available(at: configuration.directory)
                )
            }
            throw ArtifactStoreError.io(path: temporary, reason: String(cString: strerror(errno)))
        }
        var keep = false
        defer {
            close(fd)
            if !keep { unlink(temporary) }
        }
        // The mode given to open(2) is filtered by the umask; this is exact.
        guard fchmod(fd, 0o600) == 0 else { throw ArtifactStoreError.io(path: temporary, reason: String(cString: strerror(errno))) }
        let hasher = SHA256Hasher()
        var size: Int64 = 0
        var pending = ByteBuffer()
        do {
            for try await chunk in body {
                size += Int64(chunk.readableBytes)
                guard size <= configuration.maximumBytes else { throw ArtifactStoreError.tooLarge(limit: configuration.maximumBytes) }
                chunk.withUnsafeReadableBytes { hasher.update($0) }
                pending.writeImmutableBuffer(chunk)
                if pending.readableBytes >= Self.writeBatchBytes {
                    try await Self.flush(pending, to: fd, path: temporary)
                    pending = ByteBuffer()
                }
            }
            if pending.readableBytes > 0 { try await Self.flush(pending, to: fd, path: temporary) }
        } catch ArtifactStoreError.diskFull {
            // The partial file goes (the `defer` above) before the answer: the space it took is given back at once.
            throw ArtifactStoreError.noSpace(
                path: configuration.directory,
                needed: max(declaredSize ?? 0, size),
                available: DiskSpace.available(at: configuration.directory)
            )
        }
        guard size > 0 else { throw ArtifactStoreError.empty }
        let digest = hasher.finalize()
        if let expected, expected != digest { throw ArtifactStoreError.digestMismatch(expected: expected, actual: digest) }
        // The uploader checked again once the bytes are in, before they take the name (the partial file goes on a throw).
        try await admit()
        // Not while a prune removes these bytes: its delete of the shared row could follow this upload's check that the
        // row exists, and the upload would be acknowledged with the database lacking it. A prune skips it meanwhile.
        guard retention.pin(digest) else { throw ArtifactStoreError.beingRemoved(digest) }
        defer { retention.unpin(digest) }
        // Already here or not, the verified bytes take the name: a copy already filed under it may be damaged (a disk
        // error, a partial restore of the directory), and an upload of the right bytes is how an operator repairs it
        // (before, it was answered "already stored" and thrown away).
        let existed = self.size(of: digest) != nil
        let destination = path(for: digest)
        let directory = configuration.directory
        let storedSize = size
        // (Untyped closures: a typed-throws closure here crashes the 6.3.1 compiler.)
        try await NIOThreadPool.singleton.runIfActive {
            guard fsync(fd) == 0 else {
                if DiskSpace.isFull(errno) {
                    throw ArtifactStoreError.noSpace(path: directory, needed: storedSize, available: DiskSpace.available(at: directory))
                }
                throw ArtifactStoreError.io(path: temporary, reason: String(cString: strerror(errno)))
            }
            guard rename(temporary, destination) == 0 else {
                throw ArtifactStoreError.io(path: destination, reason: String(cString: strerror(errno)))
            }
            try Self.syncDirectory(directory)
        }
        keep = true
        checkedCopies.record(digest, FileIdentity(of: fd))
        // With a shared database, acknowledged only once every controller can serve it too.
        let shared = try await share(digest, size: size)
        return Stored(digest: digest, size: size, created: !existed || shared)
    }

    // MARK: Shared between controllers

    /// Copies a stored artifact into the shared database (when there is one and it lacks it), reading the file one
    /// chunk at a time. Only a copy whose bytes are known to be its digest's (just hashed on its way in, or checked) is
    /// shared: a damaged one in the database would be fetched again by every other controller at every download, found
    /// damaged, and answered 500 for good.
    /// - Returns: whether the database received it now.
    private func share(_ digest: SHA256Digest, size: Int64) async throws -> Bool {
        guard let shared = configuration.shared else { return false }
        // Held already: marked as stored now, so a prune that read the row as old does not delete it under this upload
        // (its answer would say every controller can serve what the database no longer holds).
        if try await shared.refreshArtifactBlob(digest.hex, at: Date()) { return false }
        let path = path(for: digest)
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ArtifactStoreError.io(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        let chunkBytes = configuration.sharedChunkBytes
        return try await shared.storeArtifactBlob(digest.hex, size: size, chunkBytes: chunkBytes, at: Date()) { index in
            let offset = Int64(index) * Int64(chunkBytes)
            return try await Self.read(fd, path: path, offset: offset, count: Int(min(Int64(chunkBytes), size - offset)))
        }
    }

    /// Where an artifact can be served from.
    enum Availability: Sendable, Equatable {
        /// Neither this controller nor the shared database has it.
        case absent
        /// This controller's copy, checked against its digest (`checkedSize`).
        case local(size: Int64)
        /// Only the shared database has it: fetched into the directory at its first download (`ensureLocal`).
        case shared(size: Int64)
        /// This controller's copy, whose check did not end within `Configuration.checkWait` (a large copy after a
        /// restart): it goes on, and the copy is answered for once it has ended (the routes answer 503 meanwhile).
        case checking(size: Int64)

        var size: Int64? {
            switch self {
            case .absent: nil
            case .local(let size), .shared(let size), .checking(let size): size
            }
        }
    }

    /// Where an artifact can be served from: this controller's checked copy, or the shared database's.
    ///
    /// With a shared database, a copy only this controller holds is shared first (once per artifact and process): an
    /// upload whose share failed after its file was stored (a dropped connection, a statement timeout, a kill between
    /// the two) left the database without it, and answered "present" here (the CLI's check before it uploads, a
    /// publish's), the release would name bytes every other controller answers 404 for.
    /// - Throws: the database's error when that share fails (the caller answers 5xx; a retry shares again).
    func availability(of digest: SHA256Digest) async throws -> Availability {
        switch await checkedSize(of: digest, within: configuration.checkWait) {
        case .absent:
            return try await configuration.shared?.artifactBlobSize(digest.hex).map { .shared(size: $0) } ?? .absent
        case .checking(let size):
            return .checking(size: size)
        case .checked(let size):
            if let shared = configuration.shared, !knownShared.contains(digest) {
                if try await shared.artifactBlobSize(digest.hex) == nil {
                    try await shares.fetch(digest) { _ = try await share(digest, size: size) }
                }
                knownShared.insert(digest)
            }
            return .local(size: size)
        }
    }

    /// Makes sure the artifact is in the directory, fetching it from the shared database when only that has it.
    /// - Returns: `false` when neither has it.
    /// - Throws: `ArtifactStoreError.io`, `.digestMismatch` (the database's bytes are not what their digest says).
    func ensureLocal(_ digest: SHA256Digest) async throws -> Bool {
        if size(of: digest) != nil { return true }
        guard let shared = configuration.shared, let size = try await shared.artifactBlobSize(digest.hex) else { return false }
        try await fetches.fetch(digest) { try await fetch(digest, size: size, from: shared) }
        return self.size(of: digest) != nil
    }

    private func fetch(_ digest: SHA256Digest, size: Int64, from shared: any ArtifactBlobStore) async throws {
        if self.size(of: digest) != nil { return }
        let temporary = "\(temporaryDirectory)/fetch-\(UUID().uuidString)"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw ArtifactStoreError.io(path: temporary, reason: String(cString: strerror(errno))) }
        var keep = false
        defer {
            close(fd)
            if !keep { unlink(temporary) }
        }
        guard fchmod(fd, 0o600) == 0 else { throw ArtifactStoreError.io(path: temporary, reason: String(cString: strerror(errno))) }
        let hasher = SHA256Hasher()
        var received: Int64 = 0
        var index = 0
        while received < size {
            guard let chunk = try await shared.artifactBlobChunk(digest.hex, index: index), chunk.readableBytes > 0 else {
                throw ArtifactStoreError.io(path: "database artifact \(digest.hex)", reason: "chunk \(index) is missing")
            }
            received += Int64(chunk.readableBytes)
            guard received <= size else {
                throw ArtifactStoreError.io(path: "database artifact \(digest.hex)", reason: "more bytes than its size \(size)")
            }
            chunk.withUnsafeReadableBytes { hasher.update($0) }
            try await Self.flush(chunk, to: fd, path: temporary)
            index += 1
        }
        let actual = hasher.finalize()
        guard actual == digest else { throw ArtifactStoreError.digestMismatch(expected: digest, actual: actual) }
        let destination = path(for: digest)
        let directory = configuration.directory
        try await NIOThreadPool.singleton.runIfActive {
            guard fsync(fd) == 0 else { throw ArtifactStoreError.io(path: temporary, reason: String(cString: strerror(errno))) }
            guard rename(temporary, destination) == 0 else {
                throw ArtifactStoreError.io(path: destination, reason: String(cString: strerror(errno)))
            }
            try Self.syncDirectory(directory)
        }
        keep = true
        checkedCopies.record(digest, FileIdentity(of: fd))
    }

    // MARK: Checking a copy

    /// What `checkedSize` found of this controller's own copy.
    enum LocalCopy: Sendable, Equatable {
        /// No copy (or a damaged or unreadable one, which counts as none).
        case absent
        /// A copy whose bytes match its digest, of this size.
        case checked(Int64)
        /// A copy of this size whose check did not end in the time given; it goes on.
        case checking(Int64)
    }

    /// This controller's own copy, once its bytes are known to match the digest: hashed the first time this process
    /// answers for it, and again when the file is another one (`FileIdentity`). A damaged copy is removed and an
    /// unreadable one logged (`check`): either counts as none. Waits for the check at most `limit`.
    func checkedSize(of digest: SHA256Digest, within limit: Duration) async -> LocalCopy {
        let path = path(for: digest)
        guard let before = FileIdentity(path: path) else { return .absent }
        switch checkedCopies.outcome(digest, before) {
        case true?: return .checked(before.size)
        case false?: return .absent
        case nil: break
        }
        let ended = await checks.wait(for: digest, atMost: limit) { await check(digest) }
        guard let identity = FileIdentity(path: path) else { return .absent }
        if checkedCopies.outcome(digest, identity) == true { return .checked(identity.size) }
        return ended ? .absent : .checking(identity.size)
    }

    /// Hashes a copy, `checkBatchBytes` at a time on NIO's blocking-I/O pool. A match is remembered with the file's
    /// identity, if the name still names that file; a mismatch removes the file (the one read, not one an upload has put
    /// under the name meanwhile) and is logged as an error, and so is a copy that cannot be read (kept, and answered as
    /// absent without another try until the file changes: an upload replaces it).
    private func check(_ digest: SHA256Digest) async {
        let path = path(for: digest)
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let error = errno
            if error != ENOENT, let identity = FileIdentity(path: path) {
                checkedCopies.record(digest, identity, readable: false)
                logUnreadable(digest, path: path, reason: String(cString: strerror(error)))
            }
            return
        }
        defer { close(fd) }
        let identity = FileIdentity(of: fd)
        if checkedCopies.outcome(digest, identity) != nil { return }
        await configuration.beforeCheck()
        let hasher = SHA256Hasher()
        var offset: Int64 = 0
        while offset < identity.size {
            let count = Int(min(Int64(Self.checkBatchBytes), identity.size - offset))
            do {
                let chunk = try await Self.read(fd, path: path, offset: offset, count: count)
                chunk.withUnsafeReadableBytes { hasher.update($0) }
            } catch {
                checkedCopies.record(digest, identity, readable: false)
                logUnreadable(digest, path: path, reason: "\(error)")
                return
            }
            offset += Int64(count)
        }
        let actual = hasher.finalize()
        let named = FileIdentity(path: path)
        if actual == digest {
            // An upload may have put another file under the name meanwhile: that one is checked on its own.
            if named == identity { checkedCopies.record(digest, identity) }
            return
        }
        let removed =
            named.map { $0.device == identity.device && $0.inode == identity.inode } == true
            && remove(path, ifItIs: identity, aside: "\(temporaryDirectory)/damaged-\(UUID().uuidString)")
        configuration.logger.error(
            removed
                ? "A stored artifact's bytes do not match its digest (a damaged copy): removed; publish it again to upload it"
                : "A stored artifact's bytes did not match its digest (a damaged copy); another file has its name now, and is checked on its own",
            metadata: ["artifact.sha256": "\(digest.hex)", "artifact.actual_sha256": "\(actual.hex)", "artifact.size": "\(identity.size)"]
        )
    }

    /// Removes `path` if it still names the file `identity` describes. There is no unlink-if: between a `stat` and an
    /// `unlink` an upload may rename a good copy into place, and it would be removed after its `201`. So the name is
    /// renamed `aside` (atomic), the file it named is compared, and one that is not the damaged copy is linked back
    /// under its name (unless yet another upload took the name meanwhile: that one stays; and renamed back, not lost,
    /// where the file system refuses the link). A request in that instant finds no copy, as during an upload.
    /// - Returns: whether the damaged copy was removed.
    func remove(_ path: String, ifItIs identity: FileIdentity, aside: String) -> Bool {
        guard rename(path, aside) == 0 else { return false }
        guard let moved = FileIdentity(path: aside), moved.device != identity.device || moved.inode != identity.inode else {
            unlink(aside)
            return true
        }
        if link(aside, path) == 0 || errno == EEXIST {
            unlink(aside)
        } else {
            rename(aside, path)
        }
        return false
    }

    private func logUnreadable(_ digest: SHA256Digest, path: String, reason: String) {
        configuration.logger.error(
            "A stored artifact cannot be read to check it against its digest: answered as absent until it can",
            metadata: ["artifact.sha256": "\(digest.hex)", "error.message": "\(path): \(reason)"]
        )
    }

    /// Bytes of a copy read and hashed at a time when it is checked. Default 1 MiB.
    static let checkBatchBytes = 1 << 20

    /// `count` bytes of `fd` at `offset`, read on NIO's blocking-I/O pool.
    private static func read(_ fd: Int32, path: String, offset: Int64, count: Int) async throws -> ByteBuffer {
        try await NIOThreadPool.singleton.runIfActive {
            var buffer = ByteBufferAllocator().buffer(capacity: count)
            var done = 0
            while done < count {
                let got = try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count - done) { pointer -> Int in
                    while true {
                        let n = pread(fd, pointer.baseAddress, count - done, off_t(offset) + off_t(done))
                        if n < 0 && errno == EINTR { continue }
                        guard n > 0 else {
                            throw ArtifactStoreError.io(path: path, reason: n == 0 ? "ends early" : String(cString: strerror(errno)))
                        }
                        return n
                    }
                }
                done += got
            }
            return buffer
        }
    }

    /// Largest batch of upload bytes held before writing. Default 1 MiB.
    static let writeBatchBytes = 1 << 20

    private static func flush(_ buffer: ByteBuffer, to fd: Int32, path: String) async throws {
        try await NIOThreadPool.singleton.runIfActive {
            try buffer.withUnsafeReadableBytes { bytes in try writeAll(fd, bytes, path: path) }
        }
    }

    private static func writeAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, path: String) throws(ArtifactStoreError) {
        guard var base = buffer.baseAddress else { return }
        var remaining = buffer.count
        while remaining > 0 {
            let written = write(fd, base, remaining)
            if written < 0 {
                if errno == EINTR { continue }
                if DiskSpace.isFull(errno) { throw .diskFull }
                throw .io(path: path, reason: String(cString: strerror(errno)))
            }
            remaining -= written
            base += written
        }
    }

    /// Makes a rename durable: an upload is acknowledged (and a release may then name it) only once its name is on
    /// disk. A failure here used to be ignored, and a crash could then un-rename an artifact a release already named.
    private static func syncDirectory(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw ArtifactStoreError.io(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw ArtifactStoreError.io(path: path, reason: "fsync of the directory: \(String(cString: strerror(errno)))") }
    }
}

/// Why an artifact could not be stored.
enum ArtifactStoreError: Error, CustomStringConvertible, Equatable {
    case tooLarge(limit: Int64)
    case digestMismatch(expected: SHA256Digest, actual: SHA256Digest)
    case empty
    /// The artifact directory's file system is full (or would be): nothing of the upload was kept.
    case noSpace(path: String, needed: Int64, available: Int64?)
    /// A write hit ENOSPC or EDQUOT (internal: `store` turns it into `.noSpace` once the partial file is gone).
    case diskFull
    case io(path: String, reason: String)
    /// A prune is removing this artifact right now: ask again in a moment.
    case beingRemoved(SHA256Digest)

    var description: String {
        switch self {
        case .tooLarge(let limit): "the artifact is over the limit of \(limit) bytes"
        case .noSpace(let path, let needed, let available):
            DiskSpace.message(path: path, needed: needed, available: available, detail: "the artifact is \(needed) bytes")
                + "; nothing of the upload was kept: free space on the controller and upload again"
        case .diskFull: "the disk is full"
        case .digestMismatch(let expected, let actual): "the uploaded content has SHA-256 \(actual), not the \(expected) given in X-Ferry-SHA256"
        case .empty: "the artifact is empty"
        case .io(let path, let reason): "\(path): \(reason)"
        case .beingRemoved(let digest): "artifact \(digest.hex) is being removed by a prune; ask again in a moment"
        }
    }
}

/// A set of digests, shared by an `ArtifactStore`'s copies.
final class KnownDigests: Sendable {
    private let digests = Mutex<Set<SHA256Digest>>([])

    func contains(_ digest: SHA256Digest) -> Bool { digests.withLock { $0.contains(digest) } }

    func insert(_ digest: SHA256Digest) { _ = digests.withLock { $0.insert(digest) } }

    func remove(_ digest: SHA256Digest) { _ = digests.withLock { $0.remove(digest) } }
}

/// Which file a copy is: a copy checked once is checked again when any of these change.
struct FileIdentity: Sendable, Equatable {
    var device: UInt64
    var inode: UInt64
    var size: Int64
    var modifiedSeconds: Int
    var modifiedNanoseconds: Int
    /// The inode's change time, which no tool sets back: a copy rewritten in place with its old modification time
    /// (`cp -p`, `rsync -a --inplace`) is another file.
    var changedSeconds: Int
    var changedNanoseconds: Int

    init(_ info: stat) {
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
        size = Int64(info.st_size)
        modifiedSeconds = info.st_mtim.tv_sec
        modifiedNanoseconds = info.st_mtim.tv_nsec
        changedSeconds = info.st_ctim.tv_sec
        changedNanoseconds = info.st_ctim.tv_nsec
    }

    /// The open file's identity (all zero when `fstat` fails, which matches no file).
    init(of fd: Int32) {
        var info = stat()
        if fstat(fd, &info) != 0 { info = stat() }
        self.init(info)
    }

    /// The identity of the regular, non-empty file at `path` (an empty file is no artifact: see `ArtifactStore.size`).
    init?(path: String) {
        var info = stat()
        guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, info.st_size > 0 else { return nil }
        self.init(info)
    }
}

/// Copies checked against their digest, by digest, with the file each was and whether it could be read (a damaged one
/// is removed, and leaves no entry).
final class CheckedCopies: Sendable {
    private let copies = Mutex<[SHA256Digest: (identity: FileIdentity, readable: Bool)]>([:])

    /// `true`: this file's bytes match the digest; `false`: it could not be read; `nil`: not checked (or another file).
    func outcome(_ digest: SHA256Digest, _ identity: FileIdentity) -> Bool? {
        copies.withLock { copies in copies[digest].flatMap { $0.identity == identity ? $0.readable : nil } }
    }

    func record(_ digest: SHA256Digest, _ identity: FileIdentity, readable: Bool = true) {
        copies.withLock { $0[digest] = (identity, readable) }
    }
}

/// Checks of copies in progress, by digest: one hash of a copy however many requests ask, each request waiting for it
/// at most its own limit while the check goes on.
actor ArtifactChecks {
    private var running: [SHA256Digest: Task<Void, Never>] = [:]
    private var waiters: [SHA256Digest: [Int: CheckedContinuation<Bool, Never>]] = [:]
    private var lastWaiter = 0

    /// Starts `check` of `digest` unless one runs, and waits for it at most `limit`.
    /// - Returns: whether it ended within `limit`.
    func wait(for digest: SHA256Digest, atMost limit: Duration, _ check: @escaping @Sendable () async -> Void) async -> Bool {
        if running[digest] == nil {
            running[digest] = Task {
                await check()
                self.ended(digest)
            }
        }
        lastWaiter &+= 1
        let waiter = lastWaiter
        let timer = Task {
            // Cancelled: the check ended first.
            guard (try? await Task.sleep(for: limit)) != nil else { return }
            self.timedOut(digest, waiter)
        }
        defer { timer.cancel() }
        return await withCheckedContinuation { continuation in
            waiters[digest, default: [:]][waiter] = continuation
        }
    }

    private func ended(_ digest: SHA256Digest) {
        running[digest] = nil
        for continuation in (waiters.removeValue(forKey: digest) ?? [:]).values { continuation.resume(returning: true) }
    }

    private func timedOut(_ digest: SHA256Digest, _ waiter: Int) {
        guard let continuation = waiters[digest]?.removeValue(forKey: waiter) else { return }
        if waiters[digest]?.isEmpty == true { waiters[digest] = nil }
        continuation.resume(returning: false)
    }
}

/// Work on an artifact in progress on this controller, by digest (a fetch from the shared database, a share, a
/// check): a second request for the same artifact waits for the first one's instead of starting its own.
actor SharedArtifactFetches {
    private var running: [SHA256Digest: Task<Void, any Error>] = [:]

    func fetch(_ digest: SHA256Digest, _ body: @escaping @Sendable () async throws -> Void) async throws {
        if let task = running[digest] {
            try await task.value
            return
        }
        let task = Task { try await body() }
        running[digest] = task
        defer { running[digest] = nil }
        try await task.value
    }
}
