import Foundation
import Shared
import TestSupport
import Testing

@testable import Controller

/// Every file the controller and its CLI read on an operator's say-so (a serve config, an ecosystem file, an envelope
/// or a root, standard input) is read only up to its limit: a device, a log or a pipe named by mistake is refused with
/// the limit in the message, not read whole into memory first.
@Suite("Controller inputs: files and standard input are read only up to their limits")
struct BoundedInputTests {
    struct Reader: CustomTestStringConvertible, Sendable {
        var name: String
        var read: @Sendable (String) throws -> Void
        var message: String
        var testDescription: String { name }
    }

    static let readers: [Reader] = [
        Reader(name: "serve --config", read: { _ = try ServeSettings.fromFile($0) }, message: "/dev/zero: larger than 1 MiB"),
        Reader(name: "an ecosystem file", read: { _ = try EcosystemReader.read($0) }, message: "/dev/zero: larger than 8 MiB"),
        Reader(
            name: "an envelope argument",
            read: { _ = try CLIInput.read($0, limit: Limits.envelopeBytes) },
            message: "/dev/zero: more than the limit of \(Limits.envelopeBytes) bytes"
        ),
    ]

    @Test(arguments: readers)
    func anEndlessDeviceIsRefusedAtTheLimit(_ reader: Reader) {
        #expect {
            try reader.read("/dev/zero")
        } throws: { error in
            "\(error)" == reader.message
        }
    }

    @Test func aMissingFileAndADirectoryAreNamedAsSuch() throws {
        try TestPaths.withTemporaryDirectorySync("ferry-bounded") { directory in
            let missing = directory.appendingPathComponent("missing.json").path
            #expect {
                try CLIInput.read(missing, limit: 10)
            } throws: { error in
                "\(error)" == "\(missing): no such file"
            }
            #expect(throws: ConfigurationError.unreadable(path: directory.path, reason: "cannot read it: Is a directory (errno 21)")) {
                try EcosystemReader.read(directory.path)
            }
        }
    }

    /// `verify -` with an endless standard input: the binary stops one byte past the envelope limit and says so.
    @Test func standardInputIsReadOnlyUpToTheLimit() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-bounded-stdin") { directory in
            let result = try await CommandRunner.run(
                CommandRunner.Request(
                    executable: "/bin/sh",
                    arguments: [
                        "-c", "\"$0\" keygen --out k > /dev/null && exec \"$0\" verify --trusted-key k.pub - < /dev/zero",
                        TestPaths.executable("ferry-controller"),
                    ],
                    environment: ["PATH": "/usr/bin:/bin", "HOME": directory.path],
                    workingDirectory: directory.path,
                    timeout: .seconds(60)
                )
            )
            let stderr = String(decoding: result.standardError, as: UTF8.self)
            #expect(result.termination == .exited(1), "\(stderr)")
            #expect(stderr.contains("standard input: more than the limit of \(Limits.envelopeBytes) bytes"), "\(stderr)")
        }
    }
}
