import Logging
import Shared
import Synchronization

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

/// Fetches signed artifacts into the agent's content-addressed cache, `<stateDirectory>/artifacts/<sha256>`.
///
/// Bytes stream into `<sha256>.part` while they are hashed; an interrupted download resumes from the `.part`
/// (whose bytes are hashed first) with a `Range` request. The download never grows past the signed size. Only a
/// file whose size and SHA-256 match the release is renamed into place (after fsync), so a file named by its
/// digest is always complete and verified. A mismatch deletes the `.part` and throws. Concurrent fetches of one
/// artifact (two services, or `ferry-agent fetch` beside the daemon) serialize on an advisory lock on the `.part`.
struct ArtifactFetcher: Sendable {
    /// The longest a download of `remaining` bytes may take: ten minutes, plus the bytes at 64 KiB/s. libcurl's
    /// low-speed limit (1 KiB/s over 30 s) ends a stalled transfer, not one a hostile server trickles just above it: a
    /// 200 MiB artifact at 1 KiB/s held the agent's pass, and every other service's repairs, for over two days.
    static func deadline(forRemaining remaining: Int64) -> Duration {
        .seconds(600 + max(0, remaining) / (64 * 1024))
    }

    struct Configuration: Sendable {
        /// The agent's state directory; the cache is its `artifacts` subdirectory. Default `/var/lib/ferry`.
        var stateDirectory: String = "/var/lib/ferry"
        /// Free space that must remain after the artifact's missing bytes are written. Default 64 MiB.
        var freeSpaceMargin: Int64 = 64 << 20
        /// Follow redirects for absolute artifact URLs (object stores answer presigned URLs with redirects). Never
        /// for controller-relative URLs, which carry the agent's token. Default `true`.
        var followRedirectsForAbsoluteURLs: Bool = true
        /// Test hook: the free bytes to assume instead of asking statvfs(3). Default `nil` (ask).
        var freeSpaceOverride: Int64? = nil
        /// Test-only pause point for crash tests: once at least this many bytes are in the `.part` file (written,
        /// so a kill -9 keeps them), block until the task is cancelled or the process is killed. Default `nil`.
        var pauseAfterBytes: Int64? = nil
        /// How long a fetch waits for another one of the same artifact (`ferry-agent fetch` beside the daemon) before
        /// it gives up with an error its caller tries again later. Default 10 minutes: a fetch suspended at a terminal
        /// (Ctrl-Z) held the daemon's pass, and every service's repairs, for as long as it stayed suspended.
        var lockWait: Duration = .seconds(600)

        init(
            stateDirectory: String = "/var/lib/ferry",
            freeSpaceMargin: Int64 = 64 << 20,
            followRedirectsForAbsoluteURLs: Bool = true,
            freeSpaceOverride: Int64? = nil,
            pauseAfterBytes: Int64? = nil
        ) {
            self.stateDirectory = stateDirectory
            self.freeSpaceMargin = freeSpaceMargin
            self.followRedirectsForAbsoluteURLs = followRedirectsForAbsoluteURLs
            self.freeSpaceOverride = freeSpaceOverride
            self.pauseAfterBytes = pauseAfterBytes
        }
    }

    let configuration: Configuration
    private let client: HTTPClient
    private let controllerURL: String?
    private let token: String?
    private let logger: Logger

    /// - Parameters:
    ///   - controllerURL: base for relative artifact URLs (`/v1/artifacts/...`), e.g. `https://ferry.example.com`.
    ///   - token: the agent's bearer token, sent with controller-relative URLs only (never to absolute URLs).
    init(configuration: Configuration = Configuration(), client: HTTPClient, controllerURL: String?, token: String?, logger: Logger) {
        self.configuration = configuration
        self.client = client
        self.controllerURL = controllerURL
        self.token = token
        self.logger = logger
    }

    /// `<stateDirectory>/artifacts`
    var artifactsDirectory: String { configuration.stateDirectory + "/artifacts" }

    /// Where the verified artifact with `digest` lives (whether or not it is there).
    func path(for digest: SHA256Digest) -> String { "\(artifactsDirectory)/\(digest.hex)" }

    /// Makes the artifact available in the cache, verified, and returns its path.
    ///
    /// A cached file that still hashes to the signed digest is reused without network (one that does not is
    /// deleted and fetched again).
    ///
    /// - Throws: `ArtifactFetchError` — `.download` (network; the `.part` is kept for the next attempt),
    ///   `.tooLarge` / `.sizeMismatch` / `.digestMismatch` (the `.part` is deleted), `.insufficientSpace`,
    ///   `.invalidURL`, `.fileSystem`, `.cancelled`.
    func fetch(_ artifact: ArtifactReference) async throws(ArtifactFetchError) -> FetchedArtifact {
        let digest = artifact.sha256
        let finalPath = path(for: digest)
        let partPath = finalPath + ".part"
        var logger = self.logger
        logger[metadataKey: "artifact.sha256"] = "\(digest.hex)"
        let source = try resolve(artifact)
        logger[metadataKey: "artifact.url"] = "\(RedactedURL.redact(source.url))"

        if try await verifiedCacheEntry(finalPath, artifact: artifact, logger: logger) {
            return FetchedArtifact(path: finalPath, sha256: digest, size: artifact.size, source: .cache)
        }
        try Self.makeDirectory(artifactsDirectory)
        let lock = try await lockPart(partPath, digest: digest, logger: logger)
        defer { close(lock) }
        // Another fetch may have finished while we waited for the lock.
        if try await verifiedCacheEntry(finalPath, artifact: artifact, logger: logger) {
            unlink(partPath)
            return FetchedArtifact(path: finalPath, sha256: digest, size: artifact.size, source: .cache)
        }

        var info = stat()
        guard fstat(lock, &info) == 0 else { throw .fileSystem(path: partPath, operation: "fstat", errno: errno) }
        var offset = Int64(info.st_size)
        if offset > artifact.size {
            guard ftruncate(lock, 0) == 0 else { throw .fileSystem(path: partPath, operation: "ftruncate", errno: errno) }
            offset = 0
        }
        let hash = PartHash()
        if offset > 0 {
            logger.debug("Hashing the partial artifact before resuming", metadata: ["artifact.resume_from": "\(offset)"])
            try await hash.absorb(file: partPath, fd: lock, count: offset, digest: digest)
        }

        var downloaded: Int64 = 0
        var resumedFrom: Int64 = 0
        if offset < artifact.size {
            do {
                try checkFreeSpace(needed: withMargin(artifact.size - offset))
            } catch {
                // A `.part` with bytes is kept for a resume once space is freed; the empty one just created is not.
                if offset == 0 { unlink(partPath) }
                throw error
            }
            logger.info(
                "Downloading artifact",
                metadata: ["artifact.size": "\(artifact.size)", "artifact.resume_from": "\(offset)"]
            )
            let result = try await download(source, artifact: artifact, to: partPath, from: offset, hash: hash, logger: logger)
            downloaded = result.bytesWritten
            resumedFrom = result.startOffset
        }

        let (actual, size) = hash.finalize()
        guard size == artifact.size else {
            unlink(partPath)
            throw .sizeMismatch(sha256: digest, url: RedactedURL.redact(source.url), expected: artifact.size, received: size)
        }
        guard actual == digest else {
            unlink(partPath)
            throw .digestMismatch(url: RedactedURL.redact(source.url), expected: digest, actual: actual)
        }
        // On a thread of its own: the fsync writes out up to the whole artifact (gigabytes of dirty pages), which on the
        // cooperative pool held up every task of the agent meanwhile.
        let artifactsDirectory = self.artifactsDirectory
        let failure = await DedicatedThread.run(cancellation: CancellationFlag()) { () -> ArtifactFetchError? in
            guard fsync(lock) == 0 else { return .fileSystem(path: partPath, operation: "fsync", errno: errno) }
            guard rename(partPath, finalPath) == 0 else { return .fileSystem(path: finalPath, operation: "rename", errno: errno) }
            do throws(ArtifactFetchError) {
                try Self.syncDirectory(artifactsDirectory)
            } catch {
                return error
            }
            return nil
        }
        if let failure { throw failure }
        logger.info("Artifact verified", metadata: ["artifact.downloaded_bytes": "\(downloaded)"])
        return FetchedArtifact(path: finalPath, sha256: digest, size: artifact.size, source: .download(bytes: downloaded, resumedFrom: resumedFrom))
    }

    // MARK: Steps

    private struct Source {
        var url: String
        var headers: HTTPClient.Headers
        var followRedirects: Bool
    }

    private func resolve(_ artifact: ArtifactReference) throws(ArtifactFetchError) -> Source {
        if artifact.isRelative {
            guard let controllerURL else {
                throw .invalidURL(url: artifact.url, reason: "a relative artifact URL needs the controller URL")
            }
            var base = Substring(controllerURL)
            while base.hasSuffix("/") { base = base.dropLast() }
            var headers = HTTPClient.Headers()
            if let token { headers["Authorization"] = "Bearer \(token)" }
            return Source(url: base + artifact.url, headers: headers, followRedirects: false)
        }
        let lower = artifact.url.lowercased()
        guard lower.hasPrefix("https://") || lower.hasPrefix("http://") else {
            throw .invalidURL(url: RedactedURL.redact(artifact.url), reason: "only http(s) URLs and controller paths are supported")
        }
        // The agent's token is for the controller only: never send it to a third-party host.
        return Source(url: artifact.url, headers: HTTPClient.Headers(), followRedirects: configuration.followRedirectsForAbsoluteURLs)
    }

    /// Whether a complete, verified artifact is at `path`; a wrong one is deleted.
    private func verifiedCacheEntry(_ path: String, artifact: ArtifactReference, logger: Logger) async throws(ArtifactFetchError) -> Bool {
        var info = stat()
        guard lstat(path, &info) == 0 else {
            if errno == ENOENT { return false }
            throw .fileSystem(path: path, operation: "stat", errno: errno)
        }
        if (info.st_mode & S_IFMT) == S_IFREG, Int64(info.st_size) == artifact.size {
            let flag = CancellationFlag()
            let result = await DedicatedThread.run(cancellation: flag) { () -> Result<SHA256Digest, FileHashError> in
                Result { () throws(FileHashError) in try SHA256.hash(fileAt: path).digest }
            }
            if case .success(let digest) = result, digest == artifact.sha256 {
                logger.debug("Artifact found in the cache")
                return true
            }
        }
        logger.warning("Cached artifact does not match its digest; fetching it again")
        guard unlink(path) == 0 || errno == ENOENT else { throw .fileSystem(path: path, operation: "unlink", errno: errno) }
        return false
    }

    /// Opens (creating) the `.part` file and takes its exclusive lock, waiting while another fetch holds it. A symbolic
    /// link or anything but a regular file there is refused, not followed: a `.part` linked to another file (a state
    /// directory someone else could write to, as `ferry-agent fetch --state-dir /tmp/…` run as root may be given) had
    /// that file emptied or written with the artifact's bytes.
    private func lockPart(_ path: String, digest: SHA256Digest, logger: Logger) async throws(ArtifactFetchError) -> Int32 {
        var announced = false
        let giveUpAt = ContinuousClock.now + configuration.lockWait
        while true {
            if Task.isCancelled { throw .cancelled(sha256: digest) }
            let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0o600)
            guard fd >= 0 else {
                let code = errno
                throw .fileSystem(path: path, operation: code == ELOOP ? "open (a symbolic link is not followed)" : "open", errno: code)
            }
            var kind = stat()
            guard fstat(fd, &kind) == 0, kind.st_mode & S_IFMT == S_IFREG else {
                close(fd)
                throw .fileSystem(path: path, operation: "open (not a regular file)", errno: EINVAL)
            }
            if flock(fd, LOCK_EX | LOCK_NB) == 0 {
                // The holder we waited for may have renamed or deleted the file: only a lock on the file that is
                // still at `path` counts.
                var held = stat()
                var current = stat()
                if fstat(fd, &held) == 0, stat(path, &current) == 0, held.st_dev == current.st_dev, held.st_ino == current.st_ino {
                    return fd
                }
                close(fd)
                continue
            }
            let failure = errno
            close(fd)
            guard failure == EWOULDBLOCK || failure == EINTR else { throw .fileSystem(path: path, operation: "flock", errno: failure) }
            if !announced {
                logger.info("Waiting for another fetch of the same artifact")
                announced = true
            }
            guard ContinuousClock.now < giveUpAt else {
                throw .fileSystem(
                    path: path,
                    operation: "lock (another fetch of the artifact held it for \(configuration.lockWait.components.seconds) s)",
                    errno: EWOULDBLOCK
                )
            }
            do {
                try await Task.sleep(for: .milliseconds(100))
            } catch {
                throw .cancelled(sha256: digest)
            }
        }
    }

    /// `bytes` and the free-space margin, stopping at Int64.max (neither is bounded by a release document here: the
    /// fetch command and a test hook set them).
    private func withMargin(_ bytes: Int64) -> Int64 {
        let (sum, overflow) = bytes.addingReportingOverflow(configuration.freeSpaceMargin)
        return overflow ? .max : sum
    }

    private func checkFreeSpace(needed: Int64) throws(ArtifactFetchError) {
        let available: Int64
        if let override = configuration.freeSpaceOverride {
            available = override
        } else {
            guard let bytes = DiskSpace.available(at: artifactsDirectory) else {
                throw .fileSystem(path: artifactsDirectory, operation: "statvfs", errno: errno)
            }
            available = bytes
        }
        guard available >= needed else { throw .insufficientSpace(path: artifactsDirectory, needed: needed, available: available) }
    }

    private func download(
        _ source: Source,
        artifact: ArtifactReference,
        to partPath: String,
        from offset: Int64,
        hash: PartHash,
        logger: Logger
    ) async throws(ArtifactFetchError) -> HTTPClient.DownloadResult {
        let digest = artifact.sha256
        let pauseAfter = configuration.pauseAfterBytes
        let pauseFlag = CancellationFlag()
        let client = self.client
        let outcome = await withTaskCancellationHandler { () async -> Result<HTTPClient.DownloadResult, HTTPClientError> in
            do throws(HTTPClientError) {
                return .success(
                    try await client.download(
                        from: source.url,
                        to: partPath,
                        resumeFrom: offset,
                        maxBytes: artifact.size,
                        headers: source.headers,
                        followRedirects: source.followRedirects,
                        timeout: Self.deadline(forRemaining: artifact.size - offset)
                    ) { event in
                        switch event {
                        case .began(_, let start):
                            if start == 0 { hash.restart() }
                        case .chunk(let bytes):
                            hash.absorb(bytes)
                            if let pauseAfter, hash.bytes >= pauseAfter {
                                logger.warning("Test pause point reached: waiting to be killed", metadata: ["artifact.bytes": "\(hash.bytes)"])
                                while !pauseFlag.isCancelled { usleep(20_000) }
                                throw CancellationError()
                            }
                        }
                    }
                )
            } catch {
                return .failure(error)
            }
        } onCancel: {
            pauseFlag.cancel()
        }
        switch outcome {
        case .success(let result):
            if result.alreadyComplete { logger.debug("Server reports the partial artifact is already complete") }
            return result
        case .failure(.responseTooLarge):
            unlink(partPath)
            throw .tooLarge(sha256: digest, url: RedactedURL.redact(source.url), expected: artifact.size)
        case .failure(.file(_, _, let code)) where DiskSpace.isFull(code):
            // The disk filled up under the download (something else wrote after the free-space check): the partial
            // file goes, so the space it took is given back to the apps that run, and the next pass starts over.
            unlink(partPath)
            let available = DiskSpace.available(at: artifactsDirectory) ?? 0
            logger.warning("The disk filled up during the download; partial artifact removed", metadata: ["artifact.free_bytes": "\(available)"])
            throw .insufficientSpace(path: artifactsDirectory, needed: withMargin(artifact.size), available: available)
        case .failure(.cancelled), .failure(.handlerFailed):
            throw .cancelled(sha256: digest)
        case .failure(let error) where Self.refusesTheResume(error):
            // Kept, the `.part` would be resumed with the same request next time, answered the same way, for ever.
            unlink(partPath)
            logger.warning("The server answered the resume with another range; the next attempt starts over")
            throw .download(sha256: digest, error)
        case .failure(let error):
            throw .download(sha256: digest, error)
        }
    }

    /// Whether `error` says the server (or a proxy before it) does not answer a resume as asked: a `206` whose
    /// `Content-Range` starts elsewhere or is missing.
    static func refusesTheResume(_ error: HTTPClientError) -> Bool {
        if case .invalidContentRange = error { return true }
        return false
    }

    // MARK: File system

    private static func makeDirectory(_ path: String) throws(ArtifactFetchError) {
        guard mkdir(path, 0o755) == 0 || errno == EEXIST else {
            throw .fileSystem(path: path, operation: "mkdir", errno: errno)
        }
    }

    private static func syncDirectory(_ path: String) throws(ArtifactFetchError) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .fileSystem(path: path, operation: "open", errno: errno) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw .fileSystem(path: path, operation: "fsync", errno: errno) }
    }
}

/// The running SHA-256 and length of a `.part` file, fed from the transfer thread and read afterwards.
private final class PartHash: Sendable {
    private struct State {
        var hasher = SHA256Hasher()
        var bytes: Int64 = 0
    }

    private let state = Mutex(State())

    var bytes: Int64 { state.withLock { $0.bytes } }

    func absorb(_ buffer: UnsafeRawBufferPointer) {
        // A copy (one curl buffer, up to 256 KiB, noise next to hashing it): the caller's pointer may not cross into the
        // lock-protected hasher's isolation region.
        let bytes = [UInt8](buffer)
        state.withLock {
            $0.hasher.update(bytes)
            $0.bytes += Int64(bytes.count)
        }
    }

    /// The server ignored the resume and sends everything again.
    func restart() { state.withLock { $0 = State() } }

    /// Hashes the first `count` bytes of the open file (on a dedicated thread: it may be gigabytes).
    func absorb(file path: String, fd: Int32, count: Int64, digest: SHA256Digest) async throws(ArtifactFetchError) {
        let flag = CancellationFlag()
        let failure = await DedicatedThread.run(cancellation: flag) { () -> Int32? in
            let size = 1 << 20
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
            defer { buffer.deallocate() }
            var position: Int64 = 0
            while position < count {
                if flag.isCancelled { return ECANCELED }
                let n = pread(fd, buffer.baseAddress, Int(min(Int64(size), count - position)), off_t(position))
                if n < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                if n == 0 { return EIO }  // the file shrank under us
                self.absorb(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
                position += Int64(n)
            }
            return nil
        }
        if failure == ECANCELED { throw .cancelled(sha256: digest) }
        if let failure { throw .fileSystem(path: path, operation: "read", errno: failure) }
    }

    func finalize() -> (SHA256Digest, Int64) {
        state.withLock { ($0.hasher.finalize(), $0.bytes) }
    }
}
