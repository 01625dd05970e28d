import Glibc
import Shared

/// Reads the last lines of an app's log file for a failure report: bounded, masked, printable.
///
/// Only the end of the file is read (a window of `maxBytes` plus a margin). The window is masked *before* it is cut
/// any further, and the partial first line of a window that starts inside the file is dropped — so a secret whose
/// start lies before the window cannot leave a fragment that the mask would not recognise. ANSI escape sequences and
/// control characters other than tab are removed (apps colour their output; the report carries text).
enum LogTailReader {
    /// What was read.
    struct Tail: Sendable, Equatable {
        /// Oldest first, without line ends.
        var lines: [String]
        /// The file holds more than `lines`.
        var truncated: Bool
    }

    /// The last lines of the file at `path`, or `nil` when it does not exist or cannot be read.
    ///
    /// - Parameters:
    ///   - maxLines: most lines kept (default `FailureDiagnosis.maximumLines`).
    ///   - maxBytes: most bytes of all kept lines together, line ends not counted (default
    ///     `FailureDiagnosis.maximumBytes`). A last line longer than that keeps its end.
    ///   - mask: instance env values to mask.
    static func read(
        _ path: String,
        maxLines: Int = FailureDiagnosis.maximumLines,
        maxBytes: Int = FailureDiagnosis.maximumBytes,
        mask: SecretMask
    ) -> Tail? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG else { return nil }
        let size = Int64(info.st_size)
        let margin = mask.longestSecretBytes
        // Room for the masked margin and a partial first line on top of what is kept.
        let window = Int64(maxBytes + margin + 1024)
        let start = max(0, size - window)
        var bytes = [UInt8](repeating: 0, count: Int(size - start))
        var filled = 0
        while filled < bytes.count {
            let count = bytes.withUnsafeMutableBytes { buffer -> Int in
                guard let base = buffer.baseAddress else { return 0 }
                return pread(fd, base + filled, buffer.count - filled, off_t(start) + off_t(filled))
            }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            filled += count
        }
        bytes.removeLast(bytes.count - filled)
        return tail(of: bytes, startsInside: start > 0, maxLines: maxLines, maxBytes: maxBytes, mask: mask)
    }

    /// The tail of `bytes` (the end of a file; `startsInside`: the file goes on before them). Pure: tests call it.
    static func tail(of bytes: [UInt8], startsInside: Bool, maxLines: Int, maxBytes: Int, mask: SecretMask) -> Tail {
        // Masked before control characters are taken out: a value holding a tab or a carriage return is still found.
        var text = printable(Array(mask.apply(String(decoding: bytes, as: UTF8.self)).utf8))
        var truncated = startsInside
        if startsInside {
            if let newline = text.firstIndex(of: "\n") {
                text = String(text[text.index(after: newline)...])
            } else {
                // One line longer than the window: drop as many bytes as a secret can have at the cut.
                text = String(dropping(bytes: mask.longestSecretBytes, from: text))
            }
        }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        if lines.count > maxLines {
            lines.removeFirst(lines.count - maxLines)
            truncated = true
        }
        var total = lines.reduce(0) { $0 + $1.utf8.count }
        while total > maxBytes, lines.count > 1 {
            total -= lines.removeFirst().utf8.count
            truncated = true
        }
        if total > maxBytes, let last = lines.last {
            lines[lines.count - 1] = String(dropping(bytes: last.utf8.count - maxBytes, from: last))
            truncated = true
        }
        return Tail(lines: lines, truncated: truncated)
    }

    /// `bytes` as text without ANSI escape sequences, carriage returns or control characters other than tab and
    /// newline (invalid UTF-8 becomes U+FFFD).
    static func printable(_ bytes: [UInt8]) -> String {
        var plain: [UInt8] = []
        plain.reserveCapacity(bytes.count)
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            if byte == 0x1B {
                // CSI (ESC [ ... final byte 0x40...0x7E), or ESC and one more byte.
                index += 1
                if index < bytes.count, bytes[index] == UInt8(ascii: "[") {
                    index += 1
                    while index < bytes.count, !(0x40...0x7E).contains(bytes[index]) { index += 1 }
                }
                index += 1
                continue
            }
            if byte == 0x0A || byte == 0x09 || (byte >= 0x20 && byte != 0x7F) { plain.append(byte) }
            index += 1
        }
        return String(decoding: plain, as: UTF8.self)
    }

    /// `text` without its first characters making up at least `count` bytes.
    private static func dropping(bytes count: Int, from text: String) -> Substring {
        guard count > 0 else { return Substring(text) }
        var dropped = 0
        var index = text.startIndex
        while index < text.endIndex, dropped < count {
            dropped += text[index].utf8.count
            index = text.index(after: index)
        }
        return text[index...]
    }
}
