import CLoader
import Glibc

/// Lets go of the pages of code a long-running process ran once and will not run again soon: start-up, argument
/// parsing, a deploy's extraction and health gate.
///
/// A page of an executable or shared library stays in a process's page tables, and so in its RSS, from the first time
/// the process touches it until it exits; the kernel maps it with its neighbours (fault-around, 64 KiB), so a short
/// start-up leaves megabytes of code mapped. Those pages are clean copies of the file, but while a process maps them
/// the kernel keeps them ahead of other file pages (a mapped executable page that was used is reactivated, not
/// reclaimed). `release()` tells the kernel (`madvise(MADV_DONTNEED)`) that the process no longer needs the
/// read-only pages of its loaded objects. Their contents do not change: a page the process runs again is mapped again
/// from the page cache (a minor fault), or read again from the file if the kernel reclaimed it meanwhile.
///
/// Only segments no one writes are let go: loadable segments without write permission, less every page a writable
/// segment or a RELRO region (written by the loader before it was made read-only) touches, and nothing of an object
/// with text relocations. Dropping a written page of a private mapping would lose what was written; dropping a clean
/// one loses nothing. It runs inside `dl_iterate_phdr`'s callback, which holds the loader's lock, so no object can be
/// unloaded (and its addresses reused) between reading its program headers and advising its pages.
package enum LoadedCode {
    /// One program header of a loaded object, at its address in this process.
    package struct Segment: Equatable, Sendable {
        package enum Kind: Equatable, Sendable {
            /// A loadable segment (`PT_LOAD`).
            case load(writable: Bool)
            /// Written by the loader's relocations, then made read-only (`PT_GNU_RELRO`).
            case relro
        }

        let kind: Kind
        let start: UInt
        let size: UInt
    }

    /// What one `release()` did.
    package struct Outcome: Equatable, Sendable {
        /// Loaded objects looked at (the vDSO is not).
        package var objects = 0
        /// Objects left alone: text relocations (their code pages may have been written), or a program header whose
        /// address does not fit the address space.
        package var skipped = 0
        /// Bytes advised (mapped, not necessarily resident).
        package var bytes: UInt = 0
        /// `madvise` calls that failed (a locked or special mapping); the pages stay mapped.
        package var failures = 0

        /// The figures as log fields (`ferry.objects`, `ferry.bytes`, `ferry.skipped`, `ferry.failures`).
        package var logFields: [String: String] {
            ["ferry.objects": "\(objects)", "ferry.bytes": "\(bytes)", "ferry.skipped": "\(skipped)", "ferry.failures": "\(failures)"]
        }
    }

    /// Whether `FERRY_CODE_PAGES` asks to keep code mapped: `keep`. Unset, empty or `release` let it go.
    package static func keepRequested(environment value: String?) -> Bool { value == "keep" }

    /// A warning for a `FERRY_CODE_PAGES` value that is neither unset, empty, `release` nor `keep`; `nil` otherwise.
    package static func unrecognised(environment value: String?) -> String? {
        guard let value, !value.isEmpty, value != "release", value != "keep" else { return nil }
        return "FERRY_CODE_PAGES=\(value) is not 'release' or 'keep'; code pages are released"
    }

    /// The page-aligned ranges of an object's segments that may be dropped: whole pages of loadable segments without
    /// write permission, less every page that a writable segment or a RELRO region touches. Nothing when the object
    /// has text relocations. A segment whose end would pass the end of the address space is left alone.
    package static func releasableRanges(of segments: [Segment], textRelocations: Bool, pageSize: UInt) -> [Range<UInt>] {
        guard !textRelocations, pageSize > 0, pageSize & (pageSize - 1) == 0 else { return [] }
        var candidates: [Range<UInt>] = []
        var written: [Range<UInt>] = []
        for segment in segments {
            let (end, overflow) = segment.start.addingReportingOverflow(segment.size)
            guard !overflow, segment.size > 0 else {
                // An end past the address space: nothing of it is advised, and nothing near it either.
                if overflow { written.append(pageFloor(segment.start, pageSize)..<UInt.max) }
                continue
            }
            switch segment.kind {
            case .load(writable: false):
                // Inward: a partial page at either end may belong to a neighbouring (writable) mapping.
                guard let first = pageCeiling(segment.start, pageSize) else { continue }
                let last = pageFloor(end, pageSize)
                if first < last { candidates.append(first..<last) }
            case .load(writable: true), .relro:
                // Outward: every page the segment touches.
                written.append(pageFloor(segment.start, pageSize)..<(pageCeiling(end, pageSize) ?? UInt.max))
            }
        }
        return written.reduce(candidates) { ranges, cut in ranges.flatMap { subtract(cut, from: $0) } }
    }

    /// Advises the kernel that the read-only pages of every loaded object but the vDSO are not needed now; see the
    /// type's description. Safe to call from any thread at any time; costs a few microseconds per loaded object, and
    /// afterwards a minor fault for each page the process runs again.
    @discardableResult
    package static func release() -> Outcome { iterate(advise: true).outcome }

    /// The ranges `release()` would advise now, without advising them.
    package static func plan() -> [Range<UInt>] { iterate(advise: false).planned }

    private static func iterate(advise: Bool) -> Context {
        let pageSize = sysconf(Int32(_SC_PAGESIZE))
        var context = Context(
            // Unknown: 0, and `releasableRanges` gives nothing.
            pageSize: pageSize > 0 ? UInt(pageSize) : 0,
            vdso: UInt(getauxval(UInt(AT_SYSINFO_EHDR))),
            advise: advise
        )
        _ = withUnsafeMutablePointer(to: &context) { pointer in
            ferry_iterate_loaded_objects(
                { object, size, data in
                    guard let object, let data, size >= MemoryLayout<ferry_loaded_object>.size else { return 0 }
                    data.assumingMemoryBound(to: Context.self).pointee.visit(object.pointee)
                    return 0
                },
                pointer
            )
        }
        return context
    }

    private struct Context {
        let pageSize: UInt
        let vdso: UInt
        let advise: Bool
        var outcome = Outcome()
        var planned: [Range<UInt>] = []

        mutating func visit(_ object: ferry_loaded_object) {
            guard let headers = object.headers else { return }
            let bias = UInt(object.address)
            if vdso != 0, bias == vdso { return }
            outcome.objects += 1
            var segments: [Segment] = []
            var textRelocations = false
            for index in 0..<Int(object.headerCount) {
                let header = headers[index]
                let (start, overflow) = bias.addingReportingOverflow(UInt(header.p_vaddr))
                if overflow {
                    // Not a layout this can reason about (a writable segment or the dynamic section it cannot place):
                    // the whole object is left alone.
                    outcome.skipped += 1
                    return
                }
                switch header.p_type {
                case UInt32(PT_LOAD):
                    segments.append(Segment(kind: .load(writable: header.p_flags & UInt32(PF_W) != 0), start: start, size: UInt(header.p_memsz)))
                case UInt32(PT_GNU_RELRO):
                    segments.append(Segment(kind: .relro, start: start, size: UInt(header.p_memsz)))
                case UInt32(PT_DYNAMIC):
                    textRelocations = textRelocations || Self.hasTextRelocations(dynamicAt: start, size: UInt(header.p_memsz))
                default:
                    break
                }
            }
            if textRelocations {
                outcome.skipped += 1
                return
            }
            for range in LoadedCode.releasableRanges(of: segments, textRelocations: false, pageSize: pageSize) {
                outcome.bytes += UInt(range.count)
                guard advise else {
                    planned.append(range)
                    continue
                }
                if madvise(UnsafeMutableRawPointer(bitPattern: range.lowerBound), range.count, MADV_DONTNEED) != 0 {
                    outcome.failures += 1
                }
            }
        }

        /// Whether the dynamic section says the object's code is relocated in place (`DT_TEXTREL`, or `DF_TEXTREL` in
        /// `DT_FLAGS`). Reads at most the segment's own size.
        static func hasTextRelocations(dynamicAt address: UInt, size: UInt) -> Bool {
            guard let base = UnsafePointer<Elf64_Dyn>(bitPattern: address) else { return false }
            let count = Int(min(size / UInt(MemoryLayout<Elf64_Dyn>.stride), 4096))
            for index in 0..<count {
                let entry = base[index]
                switch entry.d_tag {
                case Int64(DT_NULL): return false
                case Int64(DT_TEXTREL): return true
                case Int64(DT_FLAGS) where entry.d_un.d_val & UInt64(DF_TEXTREL) != 0: return true
                default: continue
                }
            }
            return false
        }
    }

    private static func pageFloor(_ address: UInt, _ pageSize: UInt) -> UInt { address & ~(pageSize - 1) }

    private static func pageCeiling(_ address: UInt, _ pageSize: UInt) -> UInt? {
        let (sum, overflow) = address.addingReportingOverflow(pageSize - 1)
        return overflow ? nil : sum & ~(pageSize - 1)
    }

    /// `range` without `cut`: none, one or two ranges.
    private static func subtract(_ cut: Range<UInt>, from range: Range<UInt>) -> [Range<UInt>] {
        guard cut.overlaps(range) else { return [range] }
        var pieces: [Range<UInt>] = []
        if range.lowerBound < cut.lowerBound { pieces.append(range.lowerBound..<cut.lowerBound) }
        if cut.upperBound < range.upperBound { pieces.append(cut.upperBound..<range.upperBound) }
        return pieces
    }
}
