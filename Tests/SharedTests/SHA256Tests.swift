import Foundation
import Shared
import TestSupport
import Testing

@Suite("Streaming SHA-256")
struct SHA256Tests {
    @Test(arguments: [
        ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
    ])
    func knownVectors(_ input: String, _ hex: String) {
        #expect(SHA256.hash(Array(input.utf8)).hex == hex)
    }

    /// The algorithm is fetched once and shared: digests computed on many threads at once are still right.
    @Test func concurrentDigestsAreRight() async {
        let inputs = (0..<64).map { index in (0..<(index * 37)).map { UInt8(truncatingIfNeeded: $0 &+ index) } }
        let expected = inputs.map { bytes in
            let hasher = SHA256Hasher()
            hasher.update(bytes)
            return hasher.finalize()
        }
        let results = await withTaskGroup(of: (Int, SHA256Digest).self) { group in
            for _ in 0..<8 {
                for (index, bytes) in inputs.enumerated() {
                    group.addTask { (index, SHA256.hash(bytes)) }
                }
            }
            return await group.reduce(into: [(Int, SHA256Digest)]()) { $0.append($1) }
        }
        #expect(results.count == 8 * inputs.count)
        for (index, digest) in results { #expect(digest == expected[index]) }
    }

    @Test func chunkedUpdatesEqualOneShot() {
        let bytes = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let hasher = SHA256Hasher()
        var offset = 0
        for size in [1, 7, 4096, 65_536, 100_000] where offset < bytes.count {
            let end = min(offset + size, bytes.count)
            hasher.update(Array(bytes[offset..<end]))
            offset = end
        }
        hasher.update(Array(bytes[offset...]))
        #expect(hasher.finalize() == SHA256.hash(bytes))
    }

    @Test func fileDigestMatchesSha256sum() async throws {
        try await TestPaths.withTemporaryDirectory { dir in
            let path = dir.appendingPathComponent("blob").path
            let bytes = (0..<1_000_003).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            let (digest, size) = try SHA256.hash(fileAt: path)
            #expect(size == 1_000_003)
            let expected = try await Command.run("sha256sum", [path]).stdout.split(separator: " ").first.map(String.init)
            #expect(digest.hex == expected)
        }
    }

    @Test func streamDigestMatchesOneShot() async throws {
        let chunks = (0..<10).map { i in [UInt8](repeating: UInt8(i), count: 10_000 + i) }
        let stream = AsyncStream<[UInt8]> { continuation in
            for chunk in chunks { continuation.yield(chunk) }
            continuation.finish()
        }
        let (digest, size) = try await SHA256.hash(stream)
        #expect(size == Int64(chunks.reduce(0) { $0 + $1.count }))
        #expect(digest == SHA256.hash(chunks.flatMap { $0 }))
    }

    @Test func missingFileIsAClearError() {
        let error = #expect(throws: FileHashError.self) { try SHA256.hash(fileAt: "/nonexistent/ferry/file") }
        #expect(error?.description == "cannot read /nonexistent/ferry/file: No such file or directory")
    }

    @Test func hexParsingIsStrict() {
        #expect(SHA256Digest(hex: String(repeating: "a", count: 64)) != nil)
        #expect(SHA256Digest(hex: String(repeating: "A", count: 64)) == nil)
        #expect(SHA256Digest(hex: String(repeating: "a", count: 63)) == nil)
        #expect(SHA256Digest(hex: String(repeating: "g", count: 64)) == nil)
    }
}
