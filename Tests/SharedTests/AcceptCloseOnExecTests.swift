import Foundation
import Glibc
import Testing

@testable import Shared

@Suite("accept with close-on-exec")
struct AcceptCloseOnExecTests {
    @Test("an accepted connection is close-on-exec from the start, on a Unix socket as the supervisor's")
    func acceptedDescriptorIsCloseOnExec() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("accept-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("s.sock").path

        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.utf8.enumerated() { buffer[index] = byte }
        }
        let length = socklen_t(MemoryLayout<sockaddr_un>.size)
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        try #require(listener >= 0)
        defer { close(listener) }
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) } }
        try #require(bound == 0 && listen(listener, 4) == 0)

        let client = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        try #require(client >= 0)
        defer { close(client) }
        let connected = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, length) } }
        try #require(connected == 0)

        let accepted = GlibcExtensions.acceptCloseOnExec(listener)
        try #require(accepted >= 0, "accept failed: errno \(errno)")
        defer { close(accepted) }
        #expect(fcntl(accepted, F_GETFD) & FD_CLOEXEC != 0)
        // A plain accept does not set it: what the check above would have caught.
        let second = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(second) }
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(second, $0, length) } }
        let plain = accept(listener, nil, nil)
        defer { close(plain) }
        #expect(plain >= 0 && fcntl(plain, F_GETFD) & FD_CLOEXEC == 0)
    }
}
