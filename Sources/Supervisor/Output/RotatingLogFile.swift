import Glibc
import Shared

/// Size-based log rotation settings of the builtin supervisor.
package struct LogRotation: Sendable, Equatable, Codable {
    /// A log file is rotated before a write would take it past this size. Default 10 MiB.
    package var maximumFileBytes: Int64
    /// Rotated files kept beside the live one (`out.log.1` is the newest, `out.log.<keep>` the oldest). Default 3.
    package var keptFiles: Int

    package init(maximumFileBytes: Int64 = 10 << 20, keptFiles: Int = 3) {
        self.maximumFileBytes = maximumFileBytes
        self.keptFiles = keptFiles
    }

    /// Moves each kept file of `path` one place up (`path.1` → `path.2`, …), making room for the live file as `path.1`.
    /// rename(2) replaces its target, so the oldest kept file drops off the end.
    func shiftKeptFiles(of path: String) {
        for index in stride(from: keptFiles - 1, through: 1, by: -1) {
            rename("\(path).\(index)", "\(path).\(index + 1)")
        }
    }
}

/// An append-only log file that rotates itself by size: `name.log` → `name.log.1` → … → `name.log.<keptFiles>`.
///
/// Not thread-safe: the output pump owns each one and touches it only under its lock.
final class RotatingLogFile {
    let path: String
    let rotation: LogRotation
    private var fd: Int32
    private var size: Int64

    /// When opening the file last failed (it is tried again at most once a second).
    private var failedAt: ContinuousClock.Instant?
    /// When `path` was last compared with the open file (`followPath`).
    private var comparedAt = ContinuousClock.now

    /// Opens (creating, mode 0640) `path` for appending.
    init(path: String, rotation: LogRotation) throws(SupervisorError) {
        self.path = path
        self.rotation = rotation
        let fd = Self.open(path, truncating: false)
        guard fd >= 0 else { throw .path(operation: "open log", path: path, errno: errno) }
        var info = stat()
        self.size = fstat(fd, &info) == 0 ? Int64(info.st_size) : 0
        self.fd = fd
    }

    /// A log whose file could not be opened: what is appended is dropped until `path` can be opened, which is tried
    /// again at most once a second. The app's output pipe keeps being read meanwhile: a pipe nobody reads ends the
    /// app (SIGPIPE, or Node's EPIPE) at its first line.
    init(unopened path: String, rotation: LogRotation) {
        self.path = path
        self.rotation = rotation
        self.fd = -1
        self.size = 0
        self.failedAt = .now
    }

    /// `open(2)` for appending, making the log directory again when it is gone (an operator's `rm -rf logs` to free
    /// disk: the daemon makes it only at start-up).
    private static func open(_ path: String, truncating: Bool) -> Int32 {
        let flags = O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | (truncating ? O_TRUNC : 0)
        let fd = Glibc.open(path, flags, 0o640)
        guard fd < 0, errno == ENOENT, let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return fd }
        do throws(SupervisorError) {
            try SupervisorDaemon.makeDirectory(String(path[..<slash]))
        } catch {
            // mkdir's reason (EACCES, EROFS, ENOSPC) is the one to report, not the missing directory's.
            if case .path(_, _, let code) = error { errno = code }
            return -1
        }
        return Glibc.open(path, flags, 0o640)
    }

    /// Opens the file again after a failure, at most once a second.
    private func reopenIfDue() {
        guard fd < 0 else { return }
        if let failedAt, ContinuousClock.now - failedAt < .seconds(1) { return }
        fd = Self.open(path, truncating: false)
        guard fd >= 0 else {
            failedAt = .now
            return
        }
        failedAt = nil
        var info = stat()
        size = fstat(fd, &info) == 0 ? Int64(info.st_size) : 0
    }

    /// Opens `path` again when it no longer names the open file, at most once a second: an operator's `rm` (or
    /// `rm -rf logs`) to free disk, or logrotate's rename. The output went on into the unlinked or renamed file until
    /// the next size rotation (10 MiB by default: days of a quiet app), out of sight, and after an `rm` without freeing
    /// its space.
    private func followPath() {
        guard fd >= 0 else { return }
        let now = ContinuousClock.now
        guard now - comparedAt >= .seconds(1) else { return }
        comparedAt = now
        var open = stat()
        var named = stat()
        guard fstat(fd, &open) == 0 else { return }
        if stat(path, &named) == 0, named.st_dev == open.st_dev, named.st_ino == open.st_ino { return }
        close(fd)
        fd = -1
        failedAt = nil
        reopenIfDue()
    }

    deinit {
        if fd >= 0 { close(fd) }
    }

    /// Appends `bytes`, rotating first when they would take the file past the size limit. A write error drops the
    /// bytes (a full disk must not stop the app): the caller counts what was lost.
    @discardableResult
    func append(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard !bytes.isEmpty else { return true }
        followPath()
        reopenIfDue()
        if size > 0 && size + Int64(bytes.count) > rotation.maximumFileBytes {
            rotate()
        }
        guard fd >= 0, let base = bytes.baseAddress else { return false }
        var offset = 0
        while offset < bytes.count {
            let written = write(fd, base + offset, bytes.count - offset)
            if written < 0 {
                if errno == EINTR { continue }
                return false
            }
            offset += written
        }
        size += Int64(bytes.count)
        return true
    }

    /// Appends a text line (used for the supervisor's own notes about the app, such as a failed spawn).
    func append(line: String) {
        var text = line
        if !text.hasSuffix("\n") { text += "\n" }
        text.withUTF8 { _ = append(UnsafeRawBufferPointer($0)) }
    }

    /// Moves the live file aside and starts a new one. When the live file cannot be moved (a read-only log directory,
    /// a directory that cannot grow on a full disk, a directory in the way), it is not truncated: the output goes on
    /// at its end past the size limit, and rotating is tried again at most once every `rotationRetry`. Truncating it
    /// anyway lost the newest output, what an operator reads during a disk incident.
    private func rotate() {
        if let rotationFailedAt, ContinuousClock.now - rotationFailedAt < Self.rotationRetry { return }
        if rotation.keptFiles > 0 {
            // The live file is moved aside first: the kept files move up only once it could be, or each failed try
            // would drop the oldest kept file.
            let aside = "\(path).rotating"
            if rename(path, aside) != 0 {
                if errno != ENOENT {
                    rotationFailedAt = .now
                    return
                }
            } else {
                rotation.shiftKeptFiles(of: path)
                guard rename(aside, "\(path).1") == 0 else {
                    // Put back: the output goes on at its end.
                    rename(aside, path)
                    rotationFailedAt = .now
                    return
                }
            }
        }
        rotationFailedAt = nil
        if fd >= 0 { close(fd) }
        fd = Self.open(path, truncating: true)
        size = 0
        if fd < 0 { failedAt = .now }
    }

    /// When moving the live file aside last failed.
    private var rotationFailedAt: ContinuousClock.Instant?

    /// How long after a failed rotation the next is tried.
    static let rotationRetry = Duration.seconds(10)
}
