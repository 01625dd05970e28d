import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A small tmpfs mounted by the test, so that "the disk is full" is a real ENOSPC from the kernel, not a simulation.
///
/// Mounting needs root (CAP_SYS_ADMIN); without it the calling test is cancelled with the reason printed, which is how
/// these tests are skipped on a developer's machine. `fill(leaving:)` takes the free space with a filler file;
/// `free()` removes it. Unmount with `unmount()` (lazily: a process still holding a file there does not block it)
/// before removing the directory.
public final class SmallFileSystem: Sendable {
    public let path: String
    public let sizeBytes: Int64
    private var fillerPath: String { "\(path)/.filler" }

    private init(path: String, sizeBytes: Int64) {
        self.path = path
        self.sizeBytes = sizeBytes
    }

    /// Mounts a tmpfs of `megabytes` MiB at `path` (created when missing), or cancels the test saying why it cannot.
    public static func mount(at path: String, megabytes: Int) throws -> SmallFileSystem {
        switch mountIfPossible(at: path, megabytes: megabytes) {
        case .success(let fileSystem):
            return fileSystem
        case .failure(let problem):
            print("skipped: \(problem.reason)")
            try Test.cancel(Comment(rawValue: problem.reason))
        }
    }

    /// Why a tmpfs cannot be mounted here.
    public struct Unavailable: Error, Sendable {
        public let reason: String
    }

    /// Mounts a tmpfs of `megabytes` MiB at `path`, or says why it cannot (and mounts nothing).
    public static func mountIfPossible(at path: String, megabytes: Int) -> Result<SmallFileSystem, Unavailable> {
        guard geteuid() == 0 else {
            return .failure(Unavailable(reason: "the full-disk tests mount a small tmpfs, which needs root (running as uid \(geteuid()))"))
        }
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            return .failure(Unavailable(reason: "cannot create the mount point \(path): \(error)"))
        }
        guard Glibc.mount("tmpfs", path, "tmpfs", 0, "size=\(megabytes)m,mode=0755") == 0 else {
            let reason = "mount -t tmpfs on \(path) failed: \(String(cString: strerror(errno))) (a container without CAP_SYS_ADMIN?)"
            return .failure(Unavailable(reason: reason))
        }
        return .success(SmallFileSystem(path: path, sizeBytes: Int64(megabytes) << 20))
    }

    /// Bytes free on the file system now.
    public var available: Int64 {
        var info = statvfs()
        guard statvfs(path, &info) == 0 else { return 0 }
        return Int64(info.f_bavail) * Int64(info.f_frsize)
    }

    /// Writes a filler file until at most `leaving` bytes are free (0: until the kernel says ENOSPC). Returns the free
    /// bytes left.
    @discardableResult
    public func fill(leaving: Int64 = 0) throws -> Int64 {
        let fd = open(fillerPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw HarnessError("cannot open \(fillerPath): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let chunk = [UInt8](repeating: 0xA5, count: 1 << 20)
        while true {
            let free = available
            guard free > leaving else { break }
            let count = Int(min(Int64(chunk.count), free - leaving))
            let written = chunk.withUnsafeBytes { write(fd, $0.baseAddress, count) }
            if written < 0 {
                if errno == EINTR { continue }
                if errno == ENOSPC { break }
                throw HarnessError("cannot fill \(path): \(String(cString: strerror(errno)))")
            }
            if written == 0 { break }
        }
        return available
    }

    /// Removes the filler file.
    public func free() {
        unlink(fillerPath)
    }

    /// Unmounts (lazily) and removes the mount point.
    public func unmount() {
        _ = umount2(path, Int32(MNT_DETACH))
        rmdir(path)
    }
}
