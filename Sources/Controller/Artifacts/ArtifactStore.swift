import Foundation
import Hummingbird
import NIOPosix
import Shared

#if canImport(Glibc)
import Glibc
#endif

/// Content-addressed artifact files: `<directory>/<sha256 hex>`, written once, never modified.
///
/// Uploads stream into `<directory>/tmp/` while being hashed, are fsynced, then renamed into place, so a crash or an
/// aborted upload never leaves a partial file under a digest name; what a killed upload left in `tmp/` is removed at
/// start. Directories are 0700 and files 0600, whatever the umask.
struct ArtifactStore: Sendable {
    /// Where artifacts live and how large one may be.
    struct Configuration: Sendable {
        /// The artifact directory. Default: `<data-dir>/artifacts`.
        var directory: String
        /// Largest artifact accepted, in bytes. Default 4 GiB.
        var maximumBytes: Int64 = 4 << 30

        init(directory: String, maximumBytes: Int64 = 4 << 30) {
            self.directory = directory
            self.maximumBytes = maximumBytes
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

    private var temporaryDirectory: String { configuration.directory + "/tmp" }

    /// The file of an artifact (which may not exist).
    func path(for digest: SHA256Digest) -> String { "\(configuration.directory)/\(digest.hex)" }

    /// The size of a stored artifact, or `nil` when it is not stored.
    func size(of digest: SHA256Digest) -> Int64? {
        var info = stat()
        guard stat(path(for: digest), &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return nil }
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
    /// - Throws: `ArtifactStoreError.tooLarge` past `maximumBytes`, `.digestMismatch`, `.empty`, `.noSpace` (nothing of
    ///   the upload is kept), `.io`.
    func store<Body: AsyncSequence>(
        _ body: Body,
        expected: SHA256Digest?,
        declaredSize: Int64? = nil
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
        if self.size(of: digest) != nil { return Stored(digest: digest, size: size, created: false) }
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
            Self.syncDirectory(directory)
        }
        keep = true
        return Stored(digest: digest, size: size, created: true)
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

    /// Makes a rename durable. Best effort: a failure here leaves a complete file that a crash might un-rename.
    private static func syncDirectory(_ path: String) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = fsync(fd)
        close(fd)
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
        }
    }
}
