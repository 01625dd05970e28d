import Shared

extension ArtifactTree {
    /// Something in an artifact that every agent refuses to extract, and why.
    struct Refusal: Sendable, Equatable, CustomStringConvertible {
        /// The entry refused, as the archive names it; `nil` when the archive as a whole is (too many entries, none).
        var entry: String?
        /// What is wrong, in the agent's words, and why agents refuse it.
        var reason: String

        var description: String {
            // A name is the archive's, and so are the paths some reasons quote (the link a path passes through): none
            // may move the cursor or start a line of its own.
            let reason = TerminalText.safe(reason, keepingLineBreaks: false)
            guard let entry else { return reason }
            return "\(TerminalText.safe(entry, keepingLineBreaks: false)): \(reason)"
        }

        static func unsafePath(entry: String, reason: String) -> Refusal {
            Refusal(entry: entry, reason: "unsafe path (\(reason)) — agents write entries only inside the release directory, never through a link")
        }

        static func symbolicLink(entry: String, target: String, reason: String) -> Refusal {
            Refusal(
                entry: entry,
                reason: "symbolic link to \"\(Self.quoted(target))\": \(reason) — agents refuse links that could leave the release directory"
            )
        }

        static func hardLink(entry: String, target: String, reason: String) -> Refusal {
            Refusal(
                entry: entry,
                reason: "hard link to \"\(Self.quoted(target))\": \(reason) — agents accept a hard link only to a regular file listed before it"
            )
        }

        static func unsupportedType(entry: String, type: String) -> Refusal {
            Refusal(entry: entry, reason: "a \(type) — agents extract only regular files, directories and symbolic links")
        }

        static func tooManyEntries(limit: Int) -> Refusal {
            Refusal(
                entry: nil,
                reason: "more than \(limit) entries (the directories their paths imply included) — agents refuse bigger artifacts; read no further"
            )
        }

        static func tooLarge(entry: String, limit: Int64) -> Refusal {
            Refusal(entry: entry, reason: "the archive expands to more than \(limit) bytes by this entry — agents refuse bigger artifacts")
        }

        static func damaged(entry: String, reason: String) -> Refusal {
            Refusal(entry: entry, reason: "damaged data (\(reason)) — agents refuse a damaged archive")
        }

        static let empty = Refusal(entry: nil, reason: "the archive has no entries — agents refuse an empty artifact")

        private static func quoted(_ text: String) -> String {
            TerminalText.safe(text, keepingLineBreaks: false)
        }
    }

    /// The agents' extraction rules (`ArchiveExtractor`), applied to the entries of one archive in the order it lists
    /// them: what each header says (`ArchiveEntryRules`), what it says against the entries before it (a path through a
    /// symbolic link, a hard link to something that is not a file listed earlier), and the entry and byte limits.
    /// Unlike the agent, which stops at the first, it collects every refusal.
    struct AgentRules {
        /// What an entry's header says, as libarchive gives it.
        struct Header {
            /// The entry's name, as the archive holds it.
            var path: [UInt8]
            /// `archive_entry_filetype`, masked with `AE_IFMT`.
            var fileType: UInt32
            /// The hard link's target, if the entry is one.
            var hardlink: [UInt8]?
            /// The symbolic link's target, if the entry is one and libarchive can give it.
            var symlinkTarget: [UInt8]?
            /// The size of its data the header declares, if it declares one.
            var declaredSize: Int64?
        }

        /// An entry agents would extract.
        struct Admitted {
            /// Its name, as the archive gives it (for messages).
            var name: String
            /// Its normalised path in the tree (`bin/www`).
            var path: String
            /// What it is: a hard link to the (normalised) path of a file listed before it, or an entry of its own.
            var what: What

            enum What {
                case hardlink(to: String)
                case entry(Entry.Kind)
            }
        }

        let configuration: Configuration
        /// The first `ArtifactTree.refusalListLimit` refusals.
        private(set) var refusals: [Refusal] = []
        /// Every refusal.
        private(set) var refusalCount = 0
        /// Entries counted as the agent counts them: each one listed but the root and a directory made already, and the
        /// missing parent directories each one implies.
        private(set) var entryCount = 0
        /// Bytes of data read, as the agent counts them.
        private(set) var bytes: Int64 = 0
        /// Past the entry or the byte limit: the agent stops there, and so does the reading (skipping the rest of a
        /// compressed archive is decompressing it: a bomb of terabytes took as long to refuse).
        private(set) var stopped = false

        init(configuration: Configuration) {
            self.configuration = configuration
        }

        mutating func refuse(_ refusal: Refusal) {
            refusalCount += 1
            if refusals.count < ArtifactTree.refusalListLimit { refusals.append(refusal) }
        }

        /// Checks one entry against `entries` (the tree read so far); returns it when agents would extract it, `nil`
        /// when they would refuse it (the refusal is recorded) or it is the root (`./`).
        mutating func admit(_ header: Header, in entries: [String: Entry]) -> Admitted? {
            let name = String(decoding: header.path, as: UTF8.self)
            let components: [String]
            do throws(ArchiveEntryRules.Refusal) {
                components = try ArchiveEntryRules.components(of: header.path).map { String(decoding: $0, as: UTF8.self) }
            } catch {
                refuse(.unsafePath(entry: name, reason: error.reason))
                return nil
            }
            let type = ArchiveEntryRules.extractedType(fileType: header.fileType)
            if components.isEmpty {
                // "./": the root itself, the release directory.
                if type != .directory { refuse(.unsafePath(entry: name, reason: ArchiveEntryRules.emptyPath)) }
                return nil
            }
            let path = components.joined(separator: "/")
            // A directory listed after its contents was counted when an earlier entry's path made it.
            let madeAlready = type == .directory && entries[path]?.kind == .directory
            if !madeAlready, !count(1) { return nil }
            guard checkParents(of: components, entry: name, in: entries, counting: true) else { return nil }

            if let hardlink = header.hardlink {
                let targetName = String(decoding: hardlink, as: UTF8.self)
                let target: [String]
                do throws(ArchiveEntryRules.Refusal) {
                    target = try ArchiveEntryRules.components(of: hardlink).map { String(decoding: $0, as: UTF8.self) }
                } catch {
                    refuse(.hardLink(entry: name, target: targetName, reason: error.reason))
                    return nil
                }
                guard !target.isEmpty else {
                    refuse(.hardLink(entry: name, target: targetName, reason: ArchiveEntryRules.hardLinkToRoot))
                    return nil
                }
                guard checkParents(of: target, entry: name, in: entries, counting: false) else { return nil }
                let targetPath = target.joined(separator: "/")
                guard entries[targetPath]?.kind == .file else {
                    refuse(.hardLink(entry: name, target: targetName, reason: ArchiveEntryRules.hardLinkNotARegularFile))
                    return nil
                }
                return Admitted(name: name, path: path, what: .hardlink(to: targetPath))
            }
            let kind: Entry.Kind
            switch type {
            case .regularFile:
                kind = .file
            case .directory:
                kind = .directory
            case .symbolicLink:
                guard let target = header.symlinkTarget else {
                    refuse(.symbolicLink(entry: name, target: "", reason: ArchiveEntryRules.unreadableSymlinkTarget))
                    return nil
                }
                do throws(ArchiveEntryRules.Refusal) {
                    try ArchiveEntryRules.checkSymlink(target: target, parentDepth: components.count - 1)
                } catch {
                    refuse(.symbolicLink(entry: name, target: String(decoding: target, as: UTF8.self), reason: error.reason))
                    return nil
                }
                kind = .symlink(target: String(decoding: target, as: UTF8.self))
            case nil:
                refuse(.unsupportedType(entry: name, type: ArchiveEntryRules.typeName(fileType: header.fileType)))
                return nil
            }
            return Admitted(name: name, path: path, what: .entry(kind))
        }

        /// Whether the data of an admitted entry is to be read and counted: not once the archive is past the byte
        /// limit, nor when the size `declaredSize` its header gives takes it past (the archive is then refused).
        mutating func admitData(declaredSize: Int64?, entry name: String) -> Bool {
            guard !stopped else { return false }
            // Compared without adding: libarchive takes a pax size as it is, up to Int64.max.
            if let declaredSize, declaredSize > configuration.maxTotalBytes - bytes {
                refuseTooLarge(entry: name)
                return false
            }
            return true
        }

        /// Counts `size` bytes of data of `name`; `false` (the archive refused) once they take it past the byte limit.
        mutating func countData(_ size: Int, entry name: String) -> Bool {
            let (sum, overflow) = bytes.addingReportingOverflow(Int64(max(size, 0)))
            bytes = overflow ? .max : sum
            guard bytes <= configuration.maxTotalBytes else {
                refuseTooLarge(entry: name)
                return false
            }
            return true
        }

        /// The error listing what agents would refuse, or `nil` when they would extract the archive.
        func failure(path: String) -> ReadError? {
            if refusalCount == 0, entryCount == 0 { return .refusedByAgents(path: path, refusals: [.empty], count: 1) }
            guard refusalCount > 0 else { return nil }
            return .refusedByAgents(path: path, refusals: refusals, count: refusalCount)
        }

        private mutating func refuseTooLarge(entry name: String) {
            stopped = true
            refuse(.tooLarge(entry: name, limit: configuration.maxTotalBytes))
        }

        /// Counts `added` entries; past the limit, refuses the archive and stops the reading.
        private mutating func count(_ added: Int) -> Bool {
            entryCount += added
            guard entryCount <= configuration.maxEntries else {
                refuse(.tooManyEntries(limit: configuration.maxEntries))
                stopped = true
                return false
            }
            return true
        }

        /// Refuses a path whose directories include a symbolic link or a file, as the agent does; with `counting`,
        /// the missing directories, which extracting the entry makes, count as entries.
        private mutating func checkParents(of components: [String], entry name: String, in entries: [String: Entry], counting: Bool) -> Bool {
            var prefix = ""
            for (depth, component) in components.dropLast().enumerated() {
                prefix = depth == 0 ? component : "\(prefix)/\(component)"
                guard let existing = entries[prefix] else {
                    // The rest does not exist yet.
                    return !counting || count(components.count - 1 - depth)
                }
                switch existing.kind {
                case .directory:
                    continue
                case .symlink:
                    refuse(.unsafePath(entry: name, reason: ArchiveEntryRules.passesThroughSymlink(prefix)))
                    return false
                case .file:
                    refuse(.unsafePath(entry: name, reason: ArchiveEntryRules.notADirectory(prefix)))
                    return false
                }
            }
            return true
        }
    }
}
