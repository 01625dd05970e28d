#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// Reading and writing key files with the permissions keys deserve.
package enum KeyFile {
    /// Largest key file Ferry reads; PEM Ed25519 keys are about 120 bytes.
    static let maximumSize = 64 * 1024

    /// Reads a small text file (a PEM key, a token).
    package static func read(_ path: String) throws(KeyError) -> String {
        do throws(SmallFile.ContentsError) {
            return String(decoding: try SmallFile.contents(of: path, limit: maximumSize), as: UTF8.self)
        } catch {
            throw .io(path: path, reason: "\(error)")
        }
    }

    /// Writes `text` to `path` with `mode`, refusing to replace an existing file.
    ///
    /// The file is created with `O_EXCL` and the final mode from the start, so a private key is never readable by
    /// others, not even for an instant.
    package static func create(_ path: String, contents text: String, mode: mode_t) throws(KeyError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else {
            let code = errno
            if code == EEXIST { throw .alreadyExists(path: path) }
            throw .io(path: path, reason: String(cString: strerror(code)))
        }
        defer { close(fd) }
        _ = fchmod(fd, mode)  // the umask may have narrowed the mode further; make it exact.
        let bytes = Array(text.utf8)
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, bytes.count - written) }
            if n < 0 {
                if errno == EINTR { continue }
                let reason = String(cString: strerror(errno))
                unlink(path)
                throw .io(path: path, reason: reason)
            }
            written += n
        }
        guard fsync(fd) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(path)
            throw .io(path: path, reason: reason)
        }
    }
}
