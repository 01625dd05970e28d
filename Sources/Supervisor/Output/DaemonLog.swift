import Glibc

/// The daemon's own log, `supervisor.log`: its stdout and stderr, which the launcher (or `redirectOutput`) points at the
/// file. It used to grow for ever: an app crash-looping for months writes a few lines per restart. Rotated by the apps'
/// rule (`LogRotation`) at each memory check: past `maximumFileBytes` it becomes `supervisor.log.1` (older ones move up,
/// the one past `keptFiles` drops off) and the daemon's stdout and stderr move to a new `supervisor.log`.
///
/// Only when stderr *is* that file: a daemon run in the foreground under systemd writes to the journal, which rotates
/// itself.
package enum DaemonLog {
    /// What `rotateIfNeeded` did.
    enum Rotation: Sendable, Equatable {
        /// The file was past its size: it became `supervisor.log.1`, and a new one took over.
        case rotated
        /// The file had been removed: a new one took over.
        case reopened
        /// The file had been renamed (logrotate's `create`, an operator's `mv`): the daemon writes to `path` again.
        case reopenedAfterRename
    }

    /// Which file a descriptor or path is.
    struct FileIdentity: Sendable, Equatable {
        var device: UInt64
        var inode: UInt64

        init(_ info: stat) {
            device = UInt64(info.st_dev)
            inode = UInt64(info.st_ino)
        }
    }

    /// The daemon's own log in the supervisor home `home`.
    package static func path(home: String) -> String { "\(home)/supervisor.log" }

    /// The file this process's stderr is, when `path` names it too (`nil` otherwise): what `rotateIfNeeded` starts from.
    static func identity(ofStandardErrorAt path: String) -> FileIdentity? {
        var output = stat()
        var file = stat()
        guard fstat(STDERR_FILENO, &output) == 0, stat(path, &file) == 0, FileIdentity(output) == FileIdentity(file) else { return nil }
        return FileIdentity(output)
    }

    /// Rotates `path` when this process's stderr is that file and it is past `rotation.maximumFileBytes`. The new file
    /// is opened before anything is renamed: when it cannot be (a full disk, a read-only directory), nothing moves and
    /// the daemon keeps writing where it did.
    ///
    /// `owned` is the file stderr was last seen to be at `path` (kept by the caller between calls): when stderr is still
    /// that file but `path` no longer is (renamed by logrotate's default `create` rule, or by hand), the daemon writes
    /// to `path` again. Before, it wrote on to the renamed file for good, and its own rotation never fired again.
    /// - Returns: what it did, `nil` when nothing.
    @discardableResult
    static func rotateIfNeeded(path: String, rotation: LogRotation, owned: inout FileIdentity?) -> Rotation? {
        var output = stat()
        var file = stat()
        guard fstat(STDERR_FILENO, &output) == 0, output.st_mode & S_IFMT == S_IFREG else { return nil }
        let current = FileIdentity(output)
        guard stat(path, &file) == 0, FileIdentity(file) == current else {
            let missing = errno == ENOENT
            let renamed = owned == current && output.st_nlink > 0
            // Removed by hand while the daemon writes to it (stderr's file has no name left): the daemon's output would
            // grow the removed file, out of sight and never rotated, until the daemon restarts. A new file takes over.
            guard (missing && output.st_nlink == 0) || renamed else { return nil }
            let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
            guard fd >= 0 else { return nil }
            defer { close(fd) }
            fflush(nil)
            guard dup2(fd, STDOUT_FILENO) >= 0, dup2(fd, STDERR_FILENO) >= 0 else { return nil }
            var reopened = stat()
            owned = fstat(STDERR_FILENO, &reopened) == 0 ? FileIdentity(reopened) : nil
            return renamed ? .reopenedAfterRename : .reopened
        }
        owned = current
        guard Int64(output.st_size) > rotation.maximumFileBytes else { return nil }
        if rotation.keptFiles == 0 {
            // Nothing kept: the same file, emptied (every write appends, so the next one lands at its start).
            return ftruncate(STDERR_FILENO, 0) == 0 ? .rotated : nil
        }
        let fresh = "\(path).new"
        let fd = open(fresh, O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        rotation.shiftKeptFiles(of: path)
        guard rename(path, "\(path).1") == 0 else {
            unlink(fresh)
            return nil
        }
        guard rename(fresh, path) == 0 else {
            // The live file back where it was: the daemon writes on to it, and the next check tries again.
            rename("\(path).1", path)
            unlink(fresh)
            return nil
        }
        fflush(nil)  // every output stream: what stdout holds goes to the old file
        guard dup2(fd, STDOUT_FILENO) >= 0, dup2(fd, STDERR_FILENO) >= 0 else { return nil }
        var rotated = stat()
        owned = fstat(STDERR_FILENO, &rotated) == 0 ? FileIdentity(rotated) : nil
        return .rotated
    }
}
