import Foundation
import TestSupport
import Testing

/// The tests' own way of running a command (`Command.run`) passes large input and output through without dead-locking.
@Suite struct TestCommandTests {
    @Test func aMebibyteThroughCatComesBackWhole() async throws {
        // `cat` writes as it reads: with both pipes full (64 KiB each) a runner that wrote all of stdin before reading
        // stdout would wait forever.
        let input = Data((0..<(1 << 20)).map { UInt8(32 + $0 % 95) })
        let result = try await Command.run("/bin/cat", [], stdin: input)
        #expect(result.status == 0)
        #expect(Data(result.stdout.utf8) == input)
    }
}
