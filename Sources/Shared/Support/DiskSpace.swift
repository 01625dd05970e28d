import Glibc

/// Free space on a file system, and the wording every "disk full" error uses: `no space left on <path>: need N MB`.
package enum DiskSpace {
    /// Whether `errno` means the file system (or the user's quota) is full.
    package static func isFull(_ errno: Int32) -> Bool { errno == ENOSPC || errno == EDQUOT }

    /// Bytes available to this process on the file system holding `path` (`statvfs(3)`'s `f_bavail` blocks), or `nil`
    /// when it cannot be asked. Saturates instead of overflowing on an exotic file system.
    package static func available(at path: String) -> Int64? {
        var info = statvfs()
        guard statvfs(path, &info) == 0 else { return nil }
        let (bytes, overflow) = Int64(clamping: info.f_bavail).multipliedReportingOverflow(by: Int64(clamping: info.f_frsize))
        return overflow ? .max : bytes
    }

    /// `bytes` in megabytes (10^6 bytes) with one decimal, rounded up so that "need" never understates: `85.4 MB`.
    package static func megabytes(_ bytes: Int64) -> String {
        guard bytes > 0 else { return "0 MB" }
        let (tenths, remainder) = bytes.quotientAndRemainder(dividingBy: 100_000)
        let rounded = remainder > 0 ? tenths + 1 : tenths
        return "\(rounded / 10).\(rounded % 10) MB"
    }

    /// `no space left on <path>: need N MB[ (detail)], M MB free` — the message of every disk-full error, so operators
    /// and the chaos checks find them by one phrase.
    package static func message(path: String, needed: Int64, available: Int64?, detail: String? = nil) -> String {
        var text = "no space left on \(path): need \(megabytes(needed))"
        if let detail { text += " (\(detail))" }
        if let available { text += ", \(megabytes(available)) free" }
        return text
    }
}
