import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The controller's files are private to the user it runs as: directories 0700, files 0600, whatever the umask.
///
/// The database holds token hashes and every release's env values; artifacts are the operators' code. `mkdir` and
/// `open` modes are filtered by the umask, so each is followed by an explicit `chmod`, and existing files from older
/// versions (which left them to the umask) are tightened when the controller opens them.
enum DataDirectory {
    /// Creates `path` (with missing parents) and makes it mode 0700.
    /// - Throws: `DataDirectoryError` naming the path and the system's reason.
    static func prepare(_ path: String) throws(DataDirectoryError) {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw DataDirectoryError(path: path, reason: error.localizedDescription)
        }
        guard chmod(path, 0o700) == 0 else { throw DataDirectoryError(path: path, reason: String(cString: strerror(errno))) }
    }

    /// Creates `path` when missing and makes it mode 0600 (it is not truncated).
    static func prepareFile(_ path: String) throws(DataDirectoryError) {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw DataDirectoryError(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        guard fchmod(fd, 0o600) == 0 else { throw DataDirectoryError(path: path, reason: String(cString: strerror(errno))) }
    }

    /// Makes `path` mode 0600 when it exists (a missing file is fine).
    static func restrict(_ path: String) throws(DataDirectoryError) {
        guard chmod(path, 0o600) == 0 || errno == ENOENT else {
            throw DataDirectoryError(path: path, reason: String(cString: strerror(errno)))
        }
    }
}

/// A data directory or file could not be created or made private.
struct DataDirectoryError: Error, CustomStringConvertible, Equatable {
    var path: String
    var reason: String

    var description: String { "\(path): cannot make it private to this user (\(reason)); check its owner and the parent's permissions" }
}
