import Foundation
import Shared
import Testing

/// Helpers shared by the test targets.
public enum TestPaths {
    /// The directory holding the built products (`ferry-controller`, `ferry-agent`) of this test run: the first
    /// directory above the test bundle (`ferryPackageTests.xctest`) that holds `ferry-controller`, or the bundle's own
    /// directory when none does (then `executable(_:)` fails the test, naming the command that builds them).
    public static var productsDirectory: URL {
        let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL
        var directory = bundle
        while directory.path != "/" {
            directory.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: directory.appendingPathComponent("ferry-controller").path) {
                return directory
            }
        }
        return bundle.deletingLastPathComponent()
    }

    /// The path of a built executable product (`ferry-agent`, `ferry-controller`).
    ///
    /// SwiftPM cannot declare that a test target needs an executable product, and a test cannot build one itself
    /// (`swift test` holds the build directory's lock), so a missing binary fails the calling test with the command to
    /// run, instead of a spawn error further on.
    public static func executable(_ name: String) -> String {
        let directory = productsDirectory
        let path = directory.appendingPathComponent(name).path
        if !FileManager.default.isExecutableFile(atPath: path) {
            Issue.record(
                """
                \(name) is not built in \(directory.path): these tests run the real binary. Build it first with \
                `swift build --build-tests` (it builds ferry-agent and ferry-controller too), then run \
                `swift test --skip-build`.
                """
            )
        }
        return path
    }

    /// A fresh, empty temporary directory; remove it with `FileManager.default.removeItem` when done.
    public static func makeTemporaryDirectory(_ label: String = "ferry-test") throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(label)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// Runs `body` with a fresh temporary directory that is removed afterwards, whatever happens.
    public static func withTemporaryDirectory<R>(_ label: String = "ferry-test", _ body: (URL) async throws -> R) async throws -> R {
        let url = try makeTemporaryDirectory(label)
        defer { try? FileManager.default.removeItem(at: url) }
        return try await body(url)
    }

    /// Runs `body` with a fresh temporary directory that is removed afterwards, whatever happens.
    public static func withTemporaryDirectorySync<R>(_ label: String = "ferry-test", _ body: (URL) throws -> R) throws -> R {
        let url = try makeTemporaryDirectory(label)
        defer { try? FileManager.default.removeItem(at: url) }
        return try body(url)
    }
}

/// A test set-up step that failed, with what went wrong.
public struct HarnessError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
