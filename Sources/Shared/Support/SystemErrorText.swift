import Glibc

/// `errno` values as text for error messages.
package enum SystemErrorText {
    /// `strerror` text with the number, e.g. `No such file or directory (errno 2)`.
    package static func describe(_ errno: Int32) -> String {
        "\(String(cString: strerror(errno))) (errno \(errno))"
    }
}
