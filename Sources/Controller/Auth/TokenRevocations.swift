import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The signal that some token stopped working: `<data-dir>/token-revocations`, one byte appended per revocation.
///
/// The server caches principals so the agents' desired-state polls cost no database read, and `token revoke
/// --data-dir` may run in another process while it runs. Every revocation (a token revoked, an agent removed or
/// replaced) commits to the database first and then appends to this file; the `Authenticator` `stat`s the file
/// before each lookup and trusts a cached principal only when the file is exactly as it was when that principal was
/// read from the database. Appending makes the size grow with every revocation, so two revocations within one tick of
/// the file system's clock are still told apart. A `stat` costs about a microsecond, which keeps the poll path cheap.
///
/// Controllers sharing a PostgreSQL database have separate data directories: a revocation committed through another
/// controller arrives as a notification (`ClusterChange.tokenRevoked`) and bumps the in-memory `epoch`, which is part
/// of the stamp — the same rule, across machines.
struct TokenRevocations: Sendable {
    /// What `stat` says about the file, and the epoch; any change means "read tokens from the database again".
    struct Stamp: Sendable, Equatable {
        var device: UInt64
        var inode: UInt64
        var size: Int64
        var modifiedSeconds: Int
        var modifiedNanoseconds: Int
        var epoch: UInt64 = 0
    }

    /// The file.
    let path: String
    private let epoch = Epoch()

    /// The file in `dataDirectory`.
    init(dataDirectory: String) {
        path = dataDirectory + "/token-revocations"
    }

    /// Another controller committed a revocation (or notifications may have been missed): nothing cached before this
    /// call may be served after it.
    func bumpEpoch() {
        epoch.value.add(1, ordering: .sequentiallyConsistent)
    }

    /// Whether other controllers' revocations cannot be heard now (a shared database whose change listener is not
    /// listening: not yet, or its connection dropped): then no stamp is given, and nothing is served from a cache. Each
    /// change bumps the epoch too. A controller whose listener could not reconnect while its pool still worked (a
    /// connection limit reached, a `pg_hba` rule) kept accepting tokens another controller had revoked, from its
    /// cache, for as long as that lasted.
    func othersUnheard(_ unheard: Bool) {
        epoch.unheard.store(unheard, ordering: .sequentiallyConsistent)
        bumpEpoch()
    }

    /// Whether `othersUnheard` holds now: then `stamp()` is `nil` whatever the file is.
    var othersAreUnheard: Bool { epoch.unheard.load(ordering: .sequentiallyConsistent) }

    private final class Epoch: Sendable {
        let value = Atomic<UInt64>(0)
        /// `othersUnheard`.
        let unheard = Atomic<Bool>(false)
    }

    /// The file's current stamp, or `nil` when it cannot be `stat`ed (then nothing may be served from a cache).
    func stamp() -> Stamp? {
        // The epoch first: a bump that lands after this read makes the next stamp differ.
        let epoch = epoch.value.load(ordering: .sequentiallyConsistent)
        guard !self.epoch.unheard.load(ordering: .sequentiallyConsistent) else { return nil }
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return Stamp(
            device: UInt64(info.st_dev),
            inode: UInt64(info.st_ino),
            size: Int64(info.st_size),
            modifiedSeconds: info.st_mtim.tv_sec,
            modifiedNanoseconds: info.st_mtim.tv_nsec,
            epoch: epoch
        )
    }

    /// Creates the file (mode 0600) when it is missing.
    /// - Throws: `TokenRevocationError` naming the file and the system's reason.
    func prepare() throws(TokenRevocationError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw TokenRevocationError(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        _ = fchmod(fd, 0o600)
    }

    /// Tells every process serving this data directory that a token stopped working. Call after the database commit.
    /// - Throws: `TokenRevocationError`; the caller must then make sure no server keeps the token cached (restart it).
    func bump() throws(TokenRevocationError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw TokenRevocationError(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        _ = fchmod(fd, 0o600)
        var byte: UInt8 = 0x0a
        while true {
            let written = write(fd, &byte, 1)
            if written == 1 { return }
            if written < 0 && errno == EINTR { continue }
            throw TokenRevocationError(path: path, reason: written < 0 ? String(cString: strerror(errno)) : "nothing was written")
        }
    }
}

/// The revocation signal file could not be written.
struct TokenRevocationError: Error, CustomStringConvertible {
    var path: String
    var reason: String

    var description: String {
        "\(path): cannot signal the revocation to running servers (\(reason)); restart ferry-controller serve so it stops "
            + "accepting the revoked token from its cache"
    }
}
