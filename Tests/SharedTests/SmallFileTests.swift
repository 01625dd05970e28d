import Foundation
import Shared
import TestSupport
import Testing

/// Files named by mistake: a log, a device or a directory where a key, a configuration or a root belongs. The readers
/// stop one byte past their limit, so `/dev/zero` (which never ends) is refused at once instead of filling memory.
@Suite("SmallFile: bounded reads of keys, configurations and roots")
struct SmallFileTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        /// The file to read, made in `directory` when it is not an absolute path.
        var path: @Sendable (String) throws -> String
        var limit: Int
        /// The bytes read, or the error's description.
        var expected: Result<Int, SmallFile.ContentsError>
        var testDescription: String { name }
    }

    static func file(_ size: Int) -> @Sendable (String) throws -> String {
        { directory in
            let path = directory + "/file-\(size)"
            try Data(repeating: UInt8(ascii: "k"), count: size).write(to: URL(fileURLWithPath: path))
            return path
        }
    }

    static let cases: [Case] = [
        Case(name: "an endless device", path: { _ in "/dev/zero" }, limit: 64 * 1024, expected: .failure(.tooLarge(limit: 64 * 1024))),
        Case(name: "a file one byte over", path: file(1025), limit: 1024, expected: .failure(.tooLarge(limit: 1024))),
        Case(name: "a file at the limit", path: file(1024), limit: 1024, expected: .success(1024)),
        Case(name: "an empty file", path: file(0), limit: 1024, expected: .success(0)),
        Case(name: "a file larger than one read", path: file(200_000), limit: 1 << 20, expected: .success(200_000)),
        Case(name: "a missing file", path: { $0 + "/missing" }, limit: 1024, expected: .failure(.missing)),
        Case(
            name: "a directory",
            path: { $0 },
            limit: 1024,
            expected: .failure(.unreadable(.init(operation: "read", path: "", errno: EISDIR)))
        ),
    ]

    @Test(arguments: cases)
    func contentsAreBounded(_ entry: Case) throws {
        try TestPaths.withTemporaryDirectorySync { directory in
            let path = try entry.path(directory.path)
            let outcome: Result<Int, SmallFile.ContentsError>
            do throws(SmallFile.ContentsError) {
                outcome = .success(try SmallFile.contents(of: path, limit: entry.limit).count)
            } catch {
                outcome = .failure(error)
            }
            switch (outcome, entry.expected) {
            case (.failure(.unreadable(let got)), .failure(.unreadable(let want))):
                #expect(got.errno == want.errno && got.path == path)
            default:
                #expect(outcome == entry.expected)
            }
        }
    }

    @Test func messagesNameTheLimitInUnitsAnOperatorReads() {
        #expect(SmallFile.ContentsError.tooLarge(limit: 1 << 20).description == "larger than 1 MiB")
        #expect(SmallFile.ContentsError.tooLarge(limit: 64 * 1024).description == "larger than 64 KiB")
        #expect(SmallFile.ContentsError.tooLarge(limit: 1000).description == "larger than 1000 bytes")
        #expect(SmallFile.ContentsError.missing.description == "no such file")
    }

    /// Key and token files go through `KeyFile.read`, with a 64 KiB limit.
    @Test func aKeyFileThatIsADeviceIsRefused() throws {
        let error = try #require(throws: KeyError.self) { try KeyFile.read("/dev/zero") }
        #expect("\(error)".contains("larger than 64 KiB"), "\(error)")
    }
}
