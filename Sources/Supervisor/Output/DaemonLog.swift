import Glibc

/// The daemon's own log, `supervisor.log`: its stdout and stderr, which the launcher (or `redirectOutput`) points at the
/// file. It used to grow for ever: an app crash-looping for months writes a few lines per restart. Rotated by the apps'
/// rule (`LogRotation`) at each memory check: past `maximumFileBytes` it becomes `supervisor.log.1` (older ones move up,
/// the one past `keptFiles` drops off) and the daemon's stdout and stderr move to a new `supervisor.log`.
///
/// Only when stderr *is* that file: a daemon run in the foreground under systemd writes to the journal, which rotates
/// itself.
enum DaemonLog {
    /// Rotates `path` when this process's stderr is that file and it is past `rotation.maximumFileBytes`. The new file
    /// is opened before anything is renamed: when it cannot be (a full disk, a read-only directory), nothing moves and
    /// the daemon keeps writing where it did.
    /// - Returns: whether it rotated.
    @discardableResult
    static func rotateIfNeeded(path: String, rotation: LogRotation) -> Bool {
        var output = stat()
        var file = stat()
        guard fstat(STDERR_FILENO, &output) == 0, output.st_mode & S_IFMT == S_IFREG, stat(path, &file) == 0,
            file.st_dev == output.st_dev, file.st_ino == output.st_ino, Int64(output.st_size) > rotation.maximumFileBytes
        else { return false }
        if rotation.keptFiles == 0 {
            // Nothing kept: the same file, emptied (every write appends, so the next one lands at its start).
            return ftruncate(STDERR_FILENO, 0) == 0
        }
        let fresh = "\(path).new"
        let fd = open(fresh, O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        rotation.shiftKeptFiles(of: path)
        guard rename(path, "\(path).1") == 0 else {
            unlink(fresh)
            return false
        }
        guard rename(fresh, path) == 0 else {
            // The live file back where it was: the daemon writes on to it, and the next check tries again.
            rename("\(path).1", path)
            unlink(fresh)
            return false
        }
        fflush(nil)  // every output stream: what stdout holds goes to the old file
        return dup2(fd, STDOUT_FILENO) >= 0 && dup2(fd, STDERR_FILENO) >= 0
    }
}
