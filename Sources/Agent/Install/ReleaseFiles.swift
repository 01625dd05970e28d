import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// The on-disk side of releases: the `current` symlink, the ecosystem file, leftovers and garbage collection.
struct ReleaseFiles: Sendable {
    let layout: AgentLayout

    /// Creates the state directory tree (mode 0700 for the top: it holds the token and env-derived files).
    func createDirectories(services: [String]) throws {
        let manager = FileManager.default
        try manager.createDirectory(atPath: layout.stateDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try manager.createDirectory(atPath: layout.artifactsDir, withIntermediateDirectories: true)
        for service in services {
            try manager.createDirectory(atPath: layout.releasesDir(service), withIntermediateDirectories: true)
        }
    }

    /// The directory name `current` points at (`releases/<name>`), or `nil` when there is no `current`.
    func currentDirectoryName(_ service: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let length = readlink(layout.currentLink(service), &buffer, buffer.count - 1)
        guard length > 0 else { return nil }
        let target = String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return target.split(separator: "/").last.map(String.init)
    }

    /// Points `current` at `releases/<directoryName>` atomically (relative target, so the tree can move).
    func switchCurrent(_ service: String, to directoryName: String) throws(AtomicFile.Failure) {
        try AtomicFile.replaceSymlink(layout.currentLink(service), pointingTo: "releases/\(directoryName)")
    }

    /// Removes `current` (only when a first install failed and nothing else ever ran), durably: after a power cut it
    /// came back pointing at the failed tree while the state said nothing was applied.
    func removeCurrent(_ service: String) {
        let link = layout.currentLink(service)
        if unlink(link) == 0 { try? AtomicFile.syncDirectory(containing: link) }
    }

    /// Whether the extracted release directory exists.
    func releaseExists(_ service: String, directoryName: String) -> Bool {
        var info = stat()
        return stat(layout.releaseDir(service, directoryName: directoryName), &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    /// Writes the service's generated ecosystem file atomically (mode 0600: it holds the merged env).
    func writeEcosystem(_ service: String, bytes: [UInt8]) throws(AtomicFile.Failure) {
        try AtomicFile.write(bytes, to: layout.ecosystemFile(service), mode: 0o600)
    }

    /// Removes what a crash can leave behind: staging directories of interrupted extractions, temporary files of
    /// interrupted atomic writes and single-app files pm2 was given (`AgentLayout.singleAppFilesDir`). `.part` downloads are kept only for `keepDigests` (they resume).
    func removeLeftovers(services: [String], keepDigests: Set<String>) {
        let manager = FileManager.default
        for service in services {
            let releases = layout.releasesDir(service)
            for name in (try? manager.contentsOfDirectory(atPath: releases)) ?? [] where name.contains(".staging-") {
                try? manager.removeItem(atPath: "\(releases)/\(name)")
            }
            for name in (try? manager.contentsOfDirectory(atPath: layout.serviceDir(service))) ?? [] where name.contains(".tmp-") {
                try? manager.removeItem(atPath: "\(layout.serviceDir(service))/\(name)")
            }
            // Files pm2 was given one app in (each holds the app's env) live for one call: what is there was left by a
            // crash, or by an agent from before they were removed after the call.
            let single = layout.singleAppFilesDir(service)
            for name in (try? manager.contentsOfDirectory(atPath: single)) ?? [] { unlink("\(single)/\(name)") }
        }
        for name in (try? manager.contentsOfDirectory(atPath: layout.artifactsDir)) ?? [] {
            if name.hasSuffix(".part"), !keepDigests.contains(String(name.dropLast(5))) {
                Self.removePartUnlessLocked("\(layout.artifactsDir)/\(name)")
            } else if name.contains(".tmp-") {
                try? manager.removeItem(atPath: "\(layout.artifactsDir)/\(name)")
            }
        }
        for name in (try? manager.contentsOfDirectory(atPath: layout.stateDir)) ?? [] where name.contains(".tmp-") {
            try? manager.removeItem(atPath: "\(layout.stateDir)/\(name)")
        }
        // The directory of an unconfigured service whose removal was cut short (`removeUnconfiguredService`).
        for name in (try? manager.contentsOfDirectory(atPath: layout.servicesDir)) ?? []
        where name.hasPrefix(".") && name.hasSuffix(Self.collectedSuffix) {
            FileTree.remove("\(layout.servicesDir)/\(name)")
        }
    }

    /// The services with a directory under `services/` that are not in `configured` (removed from the configuration).
    func unconfiguredServices(configured: [String]) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: layout.servicesDir)) ?? []
        return names.filter { !configured.contains($0) && !$0.hasPrefix(".") }.sorted()
    }

    /// Removes what `service`, no longer configured, left: its ecosystem file and single-app files (they hold the merged
    /// env, the instance env file's values too) and every release tree but `keep` (the applied one: `current` points at it); its whole
    /// directory when there is none to keep. The whole directory goes as release trees do (`collectReleases`): renamed
    /// to a hidden staging name first, then deleted; deleted in place and cut short, it kept a half-deleted tree under
    /// its release's name, which the same serial, the service configured again, activated as extracted.
    func removeUnconfiguredService(_ service: String, keeping keep: String?) {
        guard let keep else {
            let directory = layout.serviceDir(service)
            let doomed = "\(layout.servicesDir)/.\(service)\(Self.collectedSuffix)"
            FileTree.remove(doomed)
            guard rename(directory, doomed) == 0, (try? AtomicFile.syncDirectory(containing: doomed)) != nil else { return }
            FileTree.remove(doomed)
            return
        }
        let ecosystem = layout.ecosystemFile(service)
        if unlink(ecosystem) == 0 { try? AtomicFile.syncDirectory(containing: ecosystem) }
        let single = layout.singleAppFilesDir(service)
        for name in (try? FileManager.default.contentsOfDirectory(atPath: single)) ?? [] { unlink("\(single)/\(name)") }
        collectReleases(service, protected: [keep], keep: 0)
    }

    /// Keeps the protected release directories plus the `keep` newest others; removes the rest.
    ///
    /// Each goes under a staging name first (renamed, the rename made durable), and only then is deleted: a tree of tens
    /// of thousands of files deleted in place and cut short (the agent killed, a power loss, a failure half-way) kept its
    /// release's name, and the same serial offered again was taken as extracted and activated incomplete. A staging
    /// name is never a release; what an earlier collection left under one (cut short) goes first, here and at start
    /// (`removeLeftovers`). A tree that cannot be renamed stays whole.
    func collectReleases(_ service: String, protected: Set<String>, keep: Int) {
        let manager = FileManager.default
        let releases = layout.releasesDir(service)
        let all = (try? manager.contentsOfDirectory(atPath: releases)) ?? []
        for name in all where name.hasSuffix(Self.collectedSuffix) { FileTree.remove("\(releases)/\(name)") }
        let names = all.filter { !$0.contains(".staging-") && !protected.contains($0) }
            .sorted { (Int64($0.prefix { $0 != "-" }) ?? 0) > (Int64($1.prefix { $0 != "-" }) ?? 0) }
        for name in names.dropFirst(keep) {
            let doomed = "\(releases)/\(name)\(Self.collectedSuffix)"
            guard rename("\(releases)/\(name)", doomed) == 0 else { continue }
            guard (try? AtomicFile.syncDirectory(containing: doomed)) != nil else { continue }
            FileTree.remove(doomed)
        }
    }

    /// The name a collected release tree takes before it is deleted: a staging name (`ArchiveExtractor.stagingMarker`).
    static let collectedSuffix = ArchiveExtractor.stagingMarker + "removed"

    /// Removes cached artifacts whose digest is not in `keep` (and stale `.part` files). Only what the fetcher writes
    /// goes: a file named by a digest. Anything else there (a volume's `lost+found`, an operator's file) is left alone,
    /// and a directory is never deleted recursively.
    func collectArtifacts(keep: Set<String>) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: layout.artifactsDir)) ?? [] {
            let isPart = name.hasSuffix(".part")
            let digest = isPart ? String(name.dropLast(5)) : name
            guard !keep.contains(digest), SHA256Digest(hex: digest) != nil else { continue }
            let path = "\(layout.artifactsDir)/\(name)"
            if isPart {
                Self.removePartUnlessLocked(path)
            } else {
                var info = stat()
                if lstat(path, &info) == 0, info.st_mode & S_IFMT != S_IFDIR { unlink(path) }
            }
        }
    }

    /// Removes a partial download unless a fetch holds its lock (`ArtifactFetcher` locks the `.part` it writes):
    /// `ferry-agent fetch` may be downloading another artifact into the same directory while the daemon cleans up, and
    /// would write on into a file no longer there, then fail at its rename.
    static func removePartUnlessLocked(_ path: String) {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else {
            // A symbolic link is no download: it goes. Anything else (no descriptor left, an interrupted call, no
            // permission) is left for the next clean-up: a fetch may hold it.
            if errno == ELOOP { unlink(path) }
            return
        }
        defer { close(fd) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else { return }
        unlink(path)
    }
}
