import Glibc

/// The daemon's own log, `supervisor.log`: its stdout and stderr, which the launcher (or `redirectOutput`) points at the
/// file. It used to grow for ever: an app crash-looping for months writes a few lines per restart. Rotated by the apps'
/// rule (`LogRotation`) at each memory check: past `maximumFileBytes` it becomes `supervisor.log.1` (older ones move up,
/// the one past `keptFiles` drops off) and the daemon's stdout and stderr move to a new `supervisor.log`.
///
/// Only when stderr *is* that file: a daemon run in the foreground under systemd writes to the journal, which rotates
/// itself.
enum DaemonLog {
    /// What `rotateIfNeeded` did.
    enum Rotation: Sendable, Equatable {
        /// The file was past its size: it became `supervisor.log.1`, and a new one took over.
        case rotated
        /// The file had been removed: a new one took over.
        case reopened
    }

    /// Rotates `path` when this process's stderr is that file and it is past `rotation.maximumFileBytes`. The new file
    /// is opened before anything is renamed: when it cannot be (a full disk, a read-only directory), nothing moves and
    /// the daemon keeps writing where it did.
    /// - Returns: what it did, `nil` when nothing.
    @discardableResult
    static func rotateIfNeeded(path: String, rotation: LogRotation) -> Rotation? {
        var output = stat()
        var file = stat()
        guard fstat(STDERR_FILENO, &output) == 0, output.st_mode & S_IFMT == S_IFREG else { return nil }
        guard stat(path, &file) == 0 else {
            // Removed by hand while the daemon writes to it (stderr's file has no name left): the daemon's output would
            // grow the removed file, out of sight and never rotated, until the daemon restarts. A new file takes over.
            guard errno == ENOENT, output.st_nlink == 0 else { return nil }
            let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
            guard fd >= 0 else { return nil }
            defer { close(fd) }
            fflush(nil)
            return dup2(fd, STDOUT_FILENO) >= 0 && dup2(fd, STDERR_FILENO) >= 0 ? .reopened : nil
        }
        guard file.st_dev == output.st_dev, file.st_ino == output.st_ino, Int64(output.st_size) > rotation.maximumFileBytes else {
            return nil
        }
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
        return dup2(fd, STDOUT_FILENO) >= 0 && dup2(fd, STDERR_FILENO) >= 0 ? .rotated : nil
    }
}
