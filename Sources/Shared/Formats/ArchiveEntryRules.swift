#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The rules every agent applies to the entries of a release artifact when it extracts it (`ArchiveExtractor`), kept
/// in one place so that `publish` and `plan` (`ArtifactTree`) refuse, before anything is uploaded, exactly what every
/// agent would refuse.
///
/// These are the checks on what an entry's header says: its name, its link target, its type, and the limits on the
/// whole archive. What depends on the entries before it (a path through a symbolic link, a hard link to a file not
/// extracted earlier) each caller checks against its own view of the tree, with the reasons given here. Paths are the
/// bytes the archive holds (a name need not be UTF-8). Every `Refusal.reason` is the text the agent's error carries.
package enum ArchiveEntryRules {
    /// Most entries an archive may have, the directories its paths imply included (a big `node_modules` has a few
    /// tens of thousands).
    package static let maximumEntries = 100_000
    /// Most bytes an archive may expand to: 2 GiB, counted as the data is read (a bomb is stopped mid-entry).
    package static let maximumTotalBytes: Int64 = 2 << 30
    /// Longest entry name or hard link target, in bytes: half of `PATH_MAX`, leaving room for the release directory.
    package static let maximumPathBytes = Int(PATH_MAX) / 2

    /// Why an entry is refused, in the words of the agent's error.
    package struct Refusal: Error, Sendable, Equatable, CustomStringConvertible {
        package var reason: String

        package init(_ reason: String) {
            self.reason = reason
        }

        package var description: String { reason }
    }

    /// The types of entry agents extract; every other type (devices, FIFOs, sockets, unknown) is refused.
    package enum ExtractedType: Sendable, Equatable {
        case regularFile
        case directory
        case symbolicLink
    }

    // MARK: Reasons

    /// The reason for an empty name, or for a root entry (`./`) that is not a directory.
    package static let emptyPath = "empty path"
    /// The name shown for an entry whose name libarchive cannot give.
    package static let unreadableNameLabel = "(unreadable name)"
    /// The reason for an entry whose name libarchive cannot give.
    package static let undecodableName = "the name cannot be decoded"
    /// The reason for a symbolic link whose target libarchive cannot give.
    package static let unreadableSymlinkTarget = "unreadable symbolic link target"
    /// The reason for a hard link naming the root (`./`).
    package static let hardLinkToRoot = "hard link to the root"
    /// The reason for a hard link to anything but a regular file listed before it.
    package static let hardLinkNotARegularFile = "a hard link must name a regular file extracted before it"

    /// The reason for a path whose directory `prefix` is a symbolic link (writing there would follow the link).
    package static func passesThroughSymlink(_ prefix: String) -> String {
        "passes through the symbolic link \"\(prefix)\""
    }

    /// The reason for a path whose directory `prefix` is a file, not a directory.
    package static func notADirectory(_ prefix: String) -> String {
        "\"\(prefix)\" is not a directory"
    }

    // MARK: Checks

    /// Splits an entry's name (or a hard link's target) into its components; `.` and empty components vanish, so `./`
    /// gives none (the root itself).
    ///
    /// - Throws: `Refusal` for an empty or absolute path, one longer than `maximumPathBytes`, or a `..` component.
    package static func components(of path: [UInt8]) throws(Refusal) -> [[UInt8]] {
        guard !path.isEmpty else { throw Refusal(emptyPath) }
        guard path.first != slash else { throw Refusal("absolute path") }
        guard path.count <= maximumPathBytes else { throw Refusal("path longer than \(maximumPathBytes) bytes") }
        var result: [[UInt8]] = []
        for component in path.split(separator: slash, omittingEmptySubsequences: true) {
            if component.elementsEqual([dot]) { continue }
            if component.elementsEqual([dot, dot]) { throw Refusal("\"..\" component") }
            result.append(Array(component))
        }
        return result
    }

    /// Checks a symbolic link's target, taken relative to the link's directory, `parentDepth` components below the
    /// root: it must not be absolute, may climb (`..`) only at its start and not above the root, and then only names
    /// entries.
    ///
    /// A `..` after a name is refused: the name may itself be a link (`a -> .`), and what `a/a/a/../../..` climbs to
    /// is then not what the text says; a dangling target (`a/a/a/../../../etc/cron.d/x`) is where a later write
    /// through it would go. With climbs only at the start, from a directory that is not a link, every link resolves
    /// inside the tree, through any chain of links. npm's and pnpm's links (`../pkg/bin/cli.js`) have this form.
    ///
    /// - Throws: `Refusal` saying which of those the target breaks.
    package static func checkSymlink(target: [UInt8], parentDepth: Int) throws(Refusal) {
        guard !target.isEmpty else { throw Refusal("empty symbolic link target") }
        guard target.first != slash else { throw Refusal("absolute symbolic link target") }
        var depth = parentDepth
        var named = false
        for component in target.split(separator: slash, omittingEmptySubsequences: true) {
            if component.elementsEqual([dot]) { continue }
            if component.elementsEqual([dot, dot]) {
                guard !named else {
                    throw Refusal("\"..\" after a name in a symbolic link target (through a link it could climb out); climb only at its start")
                }
                depth -= 1
                if depth < 0 { throw Refusal("symbolic link leaves the extracted tree") }
            } else {
                named = true
                depth += 1
            }
        }
    }

    /// What an entry of `fileType` (libarchive's `archive_entry_filetype`, masked with `AE_IFMT`) is extracted as, or
    /// `nil` for a type agents never extract (name it with `typeName(fileType:)`).
    package static func extractedType(fileType: UInt32) -> ExtractedType? {
        switch fileType {
        case regularFileType: .regularFile
        case directoryType: .directory
        case symbolicLinkType: .symbolicLink
        default: nil
        }
    }

    /// What an entry of `fileType` is, in words ("FIFO", "character device").
    package static func typeName(fileType: UInt32) -> String {
        switch fileType {
        case regularFileType: "regular file"
        case directoryType: "directory"
        case symbolicLinkType: "symbolic link"
        case 0o020000: "character device"
        case 0o060000: "block device"
        case 0o010000: "FIFO"
        case 0o140000: "socket"
        default: "entry of unknown type 0o\(String(fileType, radix: 8))"
        }
    }

    // libarchive's AE_IF* values (archive_entry.h defines them as these octal numbers on every platform).
    private static let regularFileType: UInt32 = 0o100000
    private static let directoryType: UInt32 = 0o040000
    private static let symbolicLinkType: UInt32 = 0o120000

    private static let slash = UInt8(ascii: "/")
    private static let dot = UInt8(ascii: ".")
}
