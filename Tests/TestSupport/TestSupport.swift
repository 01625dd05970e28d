import Foundation
import Shared

/// Helpers shared by the test targets.
public enum TestPaths {
    /// The directory holding the built products (`ferry-controller`, `ferry-agent`) of this test run.
    public static var productsDirectory: URL {
        // The test bundle (`ferryPackageTests.xctest`) sits in the products directory.
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

    /// The path of a built executable product.
    public static func executable(_ name: String) -> String {
        productsDirectory.appendingPathComponent(name).path
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
}

/// A test set-up step that failed, with what went wrong.
public struct HarnessError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
