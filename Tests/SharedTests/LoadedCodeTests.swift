import Glibc
import Testing

@testable import Shared

/// `LoadedCode`: which pages of the loaded objects may be let go (a table of segment layouts), that what it picks in
/// this very process is only ever clean, read-only, file-backed memory (checked against `/proc/self/smaps`), and that
/// letting go of it shrinks the process's file-backed RSS while everything keeps working.
@Suite("Loaded code pages")
struct LoadedCodeTests {
    private static let page: UInt = 4096

    struct Layout: CustomTestStringConvertible, Sendable {
        var name: String
        var segments: [LoadedCode.Segment]
        var textRelocations = false
        var pageSize: UInt = LoadedCodeTests.page
        var expected: [Range<UInt>]
        var testDescription: String { name }
    }

    private static func load(_ start: UInt, _ size: UInt, writable: Bool = false) -> LoadedCode.Segment {
        .init(kind: .load(writable: writable), start: start, size: size)
    }

    private static func relro(_ start: UInt, _ size: UInt) -> LoadedCode.Segment { .init(kind: .relro, start: start, size: size) }

    static let layouts: [Layout] = [
        Layout(name: "a page-aligned code segment, whole", segments: [load(0x10000, 0x4000)], expected: [0x10000..<0x14000]),
        Layout(name: "unaligned ends are rounded inward", segments: [load(0x10010, 0x3ff0 + 0x100)], expected: [0x11000..<0x14000]),
        Layout(name: "less than a page: nothing", segments: [load(0x10010, 0x800)], expected: []),
        Layout(name: "empty segment: nothing", segments: [load(0x10000, 0)], expected: []),
        Layout(name: "a writable segment: nothing", segments: [load(0x10000, 0x4000, writable: true)], expected: []),
        Layout(
            name: "text, then data starting mid-page: the shared page stays",
            segments: [load(0x10000, 0x2800), load(0x12800, 0x1000, writable: true)],
            expected: [0x10000..<0x12000]
        ),
        Layout(
            name: "a writable segment overlapping read-only pages cuts them out",
            segments: [load(0x10000, 0x8000), load(0x13100, 0x100, writable: true)],
            expected: [0x10000..<0x13000, 0x14000..<0x18000]
        ),
        Layout(
            name: "a RELRO region inside a read-only segment is never advised",
            segments: [load(0x10000, 0x8000), relro(0x12000, 0x2000)],
            expected: [0x10000..<0x12000, 0x14000..<0x18000]
        ),
        Layout(
            name: "RELRO at the start of the data segment, which begins on the code's last page",
            segments: [load(0x0, 0x5200), load(0x5200, 0x3000, writable: true), relro(0x5200, 0x1e00)],
            expected: [0x0..<0x5000]
        ),
        Layout(
            name: "several read-only segments (rodata, text)",
            segments: [load(0x0, 0x3000), load(0x3000, 0x9000), load(0xc000, 0x2000, writable: true)],
            expected: [0x0..<0x3000, 0x3000..<0xc000]
        ),
        Layout(name: "text relocations: nothing", segments: [load(0x10000, 0x4000)], textRelocations: true, expected: []),
        Layout(name: "page size not a power of two: nothing", segments: [load(0x0, 0x10000)], pageSize: 3000, expected: []),
        Layout(name: "page size zero: nothing", segments: [load(0x0, 0x10000)], pageSize: 0, expected: []),
        Layout(
            name: "a segment whose end passes the address space: nothing, and nothing above its start",
            segments: [load(0x10000, 0x4000), load(UInt.max - 0xffff, 0x20000), load(UInt.max - 0x8fff, 0x2000)],
            expected: [0x10000..<0x14000]
        ),
        Layout(
            name: "a read-only segment at the very top, its last page cannot be rounded up to",
            segments: [load(UInt.max - 0x1ffe, 0x1000)],
            expected: []
        ),
        Layout(
            name: "a writable segment ending at the top of the address space",
            segments: [load(UInt.max - 0xffff, 0x8000), load(UInt.max - 0x7fff, 0x7fff, writable: true)],
            expected: [(UInt.max - 0xffff)..<(UInt.max - 0x7fff)]
        ),
    ]

    @Test("which pages of a loaded object may be let go", arguments: layouts)
    func releasableRanges(layout: Layout) {
        let ranges = LoadedCode.releasableRanges(of: layout.segments, textRelocations: layout.textRelocations, pageSize: layout.pageSize)
        #expect(ranges == layout.expected)
    }

    @Test(
        "FERRY_CODE_PAGES",
        arguments: [
            (nil, false, false), ("", false, false), ("release", false, false), ("keep", true, false), ("Keep", false, true), ("off", false, true),
        ] as [(String?, Bool, Bool)]
    )
    func environment(value: String?, keeps: Bool, warns: Bool) {
        #expect(LoadedCode.keepRequested(environment: value) == keeps)
        #expect((LoadedCode.unrecognised(environment: value) != nil) == warns)
    }

    /// Every page this process would let go lies in a file-backed mapping that is neither writable nor holds a
    /// written (anonymous) page: the executable's and libraries' code and read-only data, never their relocated data.
    @Test("in this process, only clean read-only file pages are picked")
    func planOnlyPicksCleanPages() throws {
        let plan = LoadedCode.plan()
        #expect(plan.reduce(0) { $0 + $1.count } > 1 << 20, "this process maps megabytes of code")
        let mappings = try Self.smaps()
        for range in plan {
            let overlapping = mappings.filter { $0.range.overlaps(range) }
            // The whole range is covered by mappings (the objects are loaded).
            let covered = overlapping.reduce(0) { $0 + $1.range.clamped(to: range).count }
            #expect(covered == range.count, "\(Self.hex(range)) is not wholly mapped")
            for mapping in overlapping {
                #expect(!mapping.permissions.contains("w"), "\(Self.hex(range)) overlaps a writable mapping: \(mapping.line)")
                #expect(mapping.path.hasPrefix("/"), "\(Self.hex(range)) overlaps a mapping of no file: \(mapping.line)")
                #expect(mapping.anonymousKB == 0, "\(Self.hex(range)) overlaps written pages: \(mapping.line)")
            }
        }
        // The relocated read-only data (RELRO) is there and is not picked: some read-only mapping holds written pages.
        let relocated = mappings.filter { !$0.permissions.contains("w") && $0.anonymousKB > 0 && $0.path.hasPrefix("/") }
        #expect(!relocated.isEmpty)
        for mapping in relocated {
            #expect(!plan.contains { $0.overlaps(mapping.range) }, "picked relocated data: \(mapping.line)")
        }
    }

    /// Letting go shrinks the process's file-backed RSS, and code and data work afterwards: hashing (libcrypto's code,
    /// mapped again), a global written before the release, a table of constants.
    @Test("letting go shrinks file-backed RSS, and the process keeps working")
    func releaseShrinksRSS() throws {
        let digestBefore = SHA256.hash(Array("ferry".utf8)).hex
        Self.written = Self.written &+ 41
        let before = try Self.rssFileKB()
        let outcome = LoadedCode.release()
        let after = try Self.rssFileKB()
        #expect(outcome.objects > 1)
        #expect(outcome.failures == 0)
        #expect(outcome.bytes > 1 << 20)
        // Other tests run meanwhile and map some pages again; a megabyte is far below what goes.
        #expect(after + 1024 < before, "RssFile \(before) kB -> \(after) kB")
        #expect(SHA256.hash(Array("ferry".utf8)).hex == digestBefore)
        #expect(digestBefore == "e9087d0b20d80d3e12bc8530d883d7ad9c1eb3ebc5cb61824a2b460816503797")
        #expect(Self.written == 42)
    }

    nonisolated(unsafe) private static var written = 1

    private struct Mapping {
        var range: Range<UInt>
        var permissions: String
        var path: String
        var anonymousKB: Int
        var line: String
    }

    private static func smaps() throws -> [Mapping] {
        let bytes = try #require(try SmallFile.read("/proc/self/smaps", limit: 64 << 20))
        var mappings: [Mapping] = []
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if let first = fields.first, first.contains("-"), fields.count >= 5 {
                let bounds = first.split(separator: "-")
                guard bounds.count == 2, let low = UInt(bounds[0], radix: 16), let high = UInt(bounds[1], radix: 16) else { continue }
                mappings.append(
                    Mapping(
                        range: low..<high,
                        permissions: String(fields[1]),
                        path: fields.count >= 6 ? fields[5...].joined(separator: " ") : "",
                        anonymousKB: 0,
                        line: String(line)
                    )
                )
            } else if fields.first == "Anonymous:", fields.count >= 2, let kb = Int(fields[1]), !mappings.isEmpty {
                mappings[mappings.count - 1].anonymousKB = kb
            }
        }
        return mappings
    }

    private static func rssFileKB() throws -> Int {
        let bytes = try #require(try SmallFile.read("/proc/self/status", limit: 64 << 10))
        let line = try #require(String(decoding: bytes, as: UTF8.self).split(separator: "\n").first { $0.hasPrefix("RssFile:") })
        return try #require(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int($0) })
    }

    private static func hex(_ range: Range<UInt>) -> String {
        "\(String(range.lowerBound, radix: 16))-\(String(range.upperBound, radix: 16))"
    }
}
