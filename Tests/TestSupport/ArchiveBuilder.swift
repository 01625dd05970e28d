import CArchive
import Foundation

/// Writes real archives for tests with libarchive's write API, including entries no well-behaved tool would
/// produce (absolute paths, `..`, devices, FIFOs, links pointing anywhere). Shared by the agent's extractor tests and
/// the controller's artifact-tree tests.
package enum ArchiveBuilder {
    package enum Format: String, Sendable, CaseIterable {
        case tar, tarGzip, tarZstd, zip
        /// Zip without compression: entry bytes appear as they are (to be damaged on purpose).
        case zipStored
    }

    package struct Entry: Sendable {
        package enum Kind: Sendable {
            case file([UInt8])
            /// `count` zero bytes, written in chunks (bombs).
            case zeros(Int)
            case directory
            case symlink(String)
            case hardlink(String)
            case characterDevice
            case blockDevice
            case fifo
        }

        package var path: String
        package var kind: Kind
        package var mode: UInt32

        package init(path: String, kind: Kind, mode: UInt32) {
            self.path = path
            self.kind = kind
            self.mode = mode
        }

        package static func file(_ path: String, _ text: String = "x", mode: UInt32 = 0o644) -> Entry {
            Entry(path: path, kind: .file(Array(text.utf8)), mode: mode)
        }

        package static func directory(_ path: String, mode: UInt32 = 0o755) -> Entry {
            Entry(path: path, kind: .directory, mode: mode)
        }

        package static func symlink(_ path: String, to target: String) -> Entry {
            Entry(path: path, kind: .symlink(target), mode: 0o777)
        }

        package static func hardlink(_ path: String, to target: String) -> Entry {
            Entry(path: path, kind: .hardlink(target), mode: 0o644)
        }

        package static func fifo(_ path: String, mode: UInt32 = 0o644) -> Entry {
            Entry(path: path, kind: .fifo, mode: mode)
        }

        /// Device 1:3 (`/dev/null`'s numbers).
        package static func characterDevice(_ path: String, mode: UInt32 = 0o666) -> Entry {
            Entry(path: path, kind: .characterDevice, mode: mode)
        }

        /// Device 8:0 (`/dev/sda`'s numbers).
        package static func blockDevice(_ path: String, mode: UInt32 = 0o660) -> Entry {
            Entry(path: path, kind: .blockDevice, mode: mode)
        }
    }

    package struct Failure: Error, CustomStringConvertible {
        package var description: String

        package init(description: String) { self.description = description }
    }

    /// Writes `entries` in order as `format` to `path`.
    package static func write(_ entries: [Entry], format: Format, to path: String) throws {
        guard let archive = archive_write_new() else { throw Failure(description: "archive_write_new") }
        defer { archive_write_free(archive) }
        switch format {
        case .tar, .tarGzip, .tarZstd: archive_write_set_format_pax_restricted(archive)
        case .zip: archive_write_set_format_zip(archive)
        case .zipStored:
            archive_write_set_format_zip(archive)
            try check(archive, archive_write_set_options(archive, "zip:compression=store"))
        }
        switch format {
        case .tarGzip: archive_write_add_filter_gzip(archive)
        case .tarZstd: archive_write_add_filter_zstd(archive)
        case .tar, .zip, .zipStored: archive_write_add_filter_none(archive)
        }
        try check(archive, archive_write_open_filename(archive, path))
        for item in entries {
            guard let entry = archive_entry_new() else { throw Failure(description: "archive_entry_new") }
            defer { archive_entry_free(entry) }
            archive_entry_set_pathname(entry, item.path)
            archive_entry_set_perm(entry, mode_t(item.mode))
            archive_entry_set_mtime(entry, 1_700_000_000, 0)
            var data: [UInt8] = []
            var zeros = 0
            switch item.kind {
            case .file(let bytes):
                archive_entry_set_filetype(entry, FERRY_AE_IFREG)
                data = bytes
                archive_entry_set_size(entry, la_int64_t(bytes.count))
            case .zeros(let count):
                archive_entry_set_filetype(entry, FERRY_AE_IFREG)
                zeros = count
                archive_entry_set_size(entry, la_int64_t(count))
            case .directory:
                archive_entry_set_filetype(entry, FERRY_AE_IFDIR)
            case .symlink(let target):
                archive_entry_set_filetype(entry, FERRY_AE_IFLNK)
                archive_entry_set_symlink(entry, target)
            case .hardlink(let target):
                archive_entry_set_filetype(entry, FERRY_AE_IFREG)
                archive_entry_set_hardlink(entry, target)
                archive_entry_set_size(entry, 0)
            case .characterDevice:
                archive_entry_set_filetype(entry, FERRY_AE_IFCHR)
                archive_entry_set_rdevmajor(entry, 1)
                archive_entry_set_rdevminor(entry, 3)
            case .blockDevice:
                archive_entry_set_filetype(entry, FERRY_AE_IFBLK)
                archive_entry_set_rdevmajor(entry, 8)
                archive_entry_set_rdevminor(entry, 0)
            case .fifo:
                archive_entry_set_filetype(entry, FERRY_AE_IFIFO)
            }
            try check(archive, archive_write_header(archive, entry))
            if !data.isEmpty {
                guard archive_write_data(archive, data, data.count) == data.count else {
                    throw Failure(description: String(cString: archive_error_string(archive)))
                }
            }
            let chunk = [UInt8](repeating: 0, count: 1 << 20)
            while zeros > 0 {
                let n = min(zeros, chunk.count)
                guard archive_write_data(archive, chunk, n) == n else {
                    throw Failure(description: String(cString: archive_error_string(archive)))
                }
                zeros -= n
            }
        }
        try check(archive, archive_write_close(archive))
    }

    /// One member of a hand-written tar: a regular file with `data`, preceded by a pax extended header holding
    /// `pax` (in order) when it is not empty. libarchive's writer refuses to declare a size its data does not have;
    /// this writes whatever the header should say.
    package struct RawMember: Sendable {
        package var path: String
        package var pax: [(key: String, value: String)]
        package var data: [UInt8]

        package init(path: String, pax: [(key: String, value: String)] = [], data: [UInt8] = []) {
            self.path = path
            self.pax = pax
            self.data = data
        }
    }

    /// The bytes of a ustar archive of `members` (uncompressed), ended by the two zero blocks.
    package static func rawTar(_ members: [RawMember]) -> [UInt8] {
        var out: [UInt8] = []
        func block(name: String, type: UInt8, data: [UInt8]) {
            var header = [UInt8](repeating: 0, count: 512)
            func put(_ text: String, at offset: Int) {
                for (index, byte) in text.utf8.enumerated() { header[offset + index] = byte }
            }
            put(String(name.prefix(99)), at: 0)
            put("0000644", at: 100)
            put("0000000", at: 108)
            put("0000000", at: 116)
            let size = String(data.count, radix: 8)
            put(String(repeating: "0", count: max(0, 11 - size.count)) + size, at: 124)
            put("14524402400", at: 136)
            header[156] = type
            put("ustar", at: 257)
            put("00", at: 263)
            for index in 148..<156 { header[index] = 0x20 }
            let sum = String(header.reduce(0) { $0 + Int($1) }, radix: 8)
            put(String(repeating: "0", count: max(0, 6 - sum.count)) + sum, at: 148)
            header[154] = 0
            out += header
            out += data
            out += [UInt8](repeating: 0, count: (512 - data.count % 512) % 512)
        }
        for member in members {
            if !member.pax.isEmpty {
                var records: [UInt8] = []
                for (key, value) in member.pax {
                    // "LENGTH key=value\n", the length counting its own digits.
                    let body = " \(key)=\(value)\n"
                    var length = body.utf8.count + 1
                    while String(length).count + body.utf8.count != length { length += 1 }
                    records += Array("\(length)\(body)".utf8)
                }
                block(name: "PaxHeaders/\(member.path)", type: UInt8(ascii: "x"), data: records)
            }
            block(name: member.path, type: UInt8(ascii: "0"), data: member.data)
        }
        out += [UInt8](repeating: 0, count: 1024)
        return out
    }

    private static func check(_ archive: OpaquePointer, _ status: Int32) throws {
        guard status >= ARCHIVE_WARN else {
            throw Failure(description: archive_error_string(archive).map { String(cString: $0) } ?? "libarchive error \(status)")
        }
    }
}
