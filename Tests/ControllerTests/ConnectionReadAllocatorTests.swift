import NIOCore
import Testing

@testable import Controller

/// The read sizes of a client connection (`ConnectionReadAllocator`): a sequence of socket reads in, the size of each
/// next read out. Defaults: 512 bytes at first and at least, 64 KiB at most, eight full reads in a row to grow.
@Suite struct ConnectionReadAllocatorTests {
    struct Case: Sendable, CustomTestStringConvertible {
        let name: String
        /// Bytes each read returned; each read is recorded against the size the allocator gave before it.
        let reads: [Int]
        /// The size after each read.
        let sizes: [Int]
        var testDescription: String { name }
    }

    /// `count` reads that each fill whatever buffer they are given (sizes are checked by the case).
    static let full = Int.max

    static let cases: [Case] = [
        Case(name: "an agent's poll (a few hundred bytes) keeps 512", reads: [300, 280, 300], sizes: [512, 512, 512]),
        Case(
            name: "a status report of a kilobyte, read in two pieces, again and again, keeps 512",
            reads: [512, 450, 512, 450, 512, 450, 300],
            sizes: [512, 512, 512, 512, 512, 512, 512]
        ),
        Case(
            name: "a report of 3.5 KB (seven full reads and the rest) keeps 512",
            reads: [512, 512, 512, 512, 512, 512, 512, 100],
            sizes: [512, 512, 512, 512, 512, 512, 512, 512]
        ),
        Case(
            name: "the eighth full read in a row grows it",
            reads: [512, 512, 512, 512, 512, 512, 512, 512],
            sizes: [512, 512, 512, 512, 512, 512, 512, 1024]
        ),
        Case(
            name: "a partial read ends the streak",
            reads: [512, 512, 512, 512, 512, 512, 512, 511, 512],
            sizes: [512, 512, 512, 512, 512, 512, 512, 512, 512]
        ),
        Case(
            name: "an upload doubles on every full read once grown, up to 64 KiB and no further",
            reads: Array(repeating: full, count: 16),
            sizes: [512, 512, 512, 512, 512, 512, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 65536, 65536]
        ),
        Case(
            name: "after an upload, two small reads in a row halve it, down to 512",
            reads: Array(repeating: full, count: 9) + [100, 100, 100, 100, 100, 100],
            sizes: [512, 512, 512, 512, 512, 512, 512, 1024, 2048, 2048, 1024, 1024, 512, 512, 512]
        ),
        Case(
            name: "one small read between reads of more than half does not halve it",
            reads: Array(repeating: full, count: 9) + [100, 1500, 100, 1500],
            sizes: [512, 512, 512, 512, 512, 512, 512, 1024, 2048, 2048, 2048, 2048, 2048]
        ),
        Case(name: "an empty read (the peer closed) changes nothing", reads: [0, 0, 0], sizes: [512, 512, 512]),
    ]

    @Test(arguments: cases)
    func readSizes(_ example: Case) {
        var allocator = ConnectionReadAllocator()
        #expect(allocator.nextBufferSize() == 512)
        var sizes: [Int] = []
        for read in example.reads {
            let given = allocator.nextBufferSize() ?? 0
            let grew = allocator.record(actualReadBytes: read == Self.full ? given : read)
            sizes.append(allocator.nextBufferSize() ?? 0)
            #expect(grew == (sizes.last! > given), "record(actualReadBytes:) tells whether the next read may be larger")
        }
        #expect(sizes == example.sizes)
    }

    @Test func buffersHaveTheNextSize() {
        var allocator = ConnectionReadAllocator(initial: 64, maximum: 256, streak: 1)
        #expect(allocator.buffer(allocator: ByteBufferAllocator()).capacity >= 64)
        _ = allocator.record(actualReadBytes: 64)
        _ = allocator.record(actualReadBytes: 128)
        #expect(allocator.nextBufferSize() == 256)
        #expect(allocator.buffer(allocator: ByteBufferAllocator()).capacity >= 256)
        // Larger than any buffer: no overflow, no growth past the maximum.
        #expect(allocator.record(actualReadBytes: .max) == false)
        #expect(allocator.nextBufferSize() == 256)
    }
}
