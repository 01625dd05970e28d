import Shared

/// This boot of the kernel (`/proc/sys/kernel/random/boot_id`). A pid and start time (`ProcStat.startTicks`, counted
/// from boot) recorded in another boot name no process of this one, however alike they look: boots are deterministic
/// enough that early processes (a process manager's daemon, its first apps) get the same pid and tick again, and a
/// record kept across a reboot would have them stopped as leftovers.
package enum BootID {
    /// This boot's id, `nil` when it cannot be read (then records are taken as this boot's, as before).
    package static let current: String? = read()

    /// The id in `path` (a UUID and a newline), `nil` when unreadable or malformed.
    package static func read(path: String = "/proc/sys/kernel/random/boot_id") -> String? {
        guard var bytes = try? SmallFile.read(path, limit: 64) else { return nil }
        while let last = bytes.last, last == UInt8(ascii: "\n") || last == UInt8(ascii: " ") { bytes.removeLast() }
        guard bytes.count == 36, bytes.allSatisfy(isIDByte) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func isIDByte(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: "-") || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
    }

    /// Whether a record made in `recorded` (`nil`: by a version that kept no boot id) may name processes of this boot.
    package static func isThisBoot(_ recorded: String?) -> Bool {
        guard let recorded, let current else { return true }
        return recorded == current
    }
}
