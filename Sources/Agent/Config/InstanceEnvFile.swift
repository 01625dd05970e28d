import Glibc
import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The instance's own secrets for a service: `<envDir>/<service>.env`, in Ferry's one `.env` dialect (`DotEnvFile`,
/// docs/design.md).
///
/// These values never leave the host: they are merged into the apps' environment last (they win over the release),
/// feed the secrets mask (`InstanceSecrets`) and are never reported; errors name the file and line, never a value.
struct InstanceEnvFile: Sendable, Equatable {
    var values: [String: String]
    /// SHA-256 of the variables (`canonicalDigest`), to notice changes without keeping the values around. A comment, the
    /// order of the lines, quoting or line endings change nothing an app sees, and reload nothing: the file's bytes
    /// were hashed before, and a config tool writing a dated header reloaded (restarted) every app of the service.
    var digest: String
    /// SHA-256 of the file's bytes: what agents before the variables' digest recorded for the applied release.
    var fileDigest: String

    /// The digest of no variables (an absent file).
    static let emptyDigest = SHA256.hash([UInt8]()).hex

    /// Reads the env file of `service` in `directory`; an absent file is an empty environment.
    ///
    /// A file that exists but cannot be read is an error, not "no secrets": reading it as empty would reload the apps
    /// without them. So is a missing `directory` when `applied` (the env digest recorded with the service's applied
    /// release) says the apps run with variables: a typo in `FERRY_ENV_DIR` or a secrets directory not made yet is not
    /// the operator removing them (removing the file is), and the apps keep what they were started with. (A volume not
    /// yet mounted on an existing, empty mount point reads as the file removed: mount secrets below the env directory's
    /// own path, or make the unit wait for the mount.) Limits:
    /// `Limits.envTotalBytes` bytes, `Limits.envEntries` variables.
    static func load(service: String, directory: String, applied: String? = nil) throws(DotEnvFileError) -> InstanceEnvFile {
        let path = "\(directory)/\(service).env"
        guard let bytes = try DotEnvFile.read(path: path) else {
            if let applied, applied != emptyDigest, let problem = directoryProblem(directory) {
                throw DotEnvFileError(
                    path: path,
                    line: nil,
                    problem: .unreadable(
                        reason: "the env directory \(directory) \(problem), while the running release was started with variables from it; "
                            + "they are kept (to remove them, remove the file, not the directory)"
                    )
                )
            }
            return InstanceEnvFile(values: [:], digest: emptyDigest, fileDigest: emptyDigest)
        }
        let values = try DotEnvFile.parse(bytes, path: path)
        return InstanceEnvFile(values: values, digest: canonicalDigest(values), fileDigest: SHA256.hash(bytes).hex)
    }

    /// Why `directory` cannot hold env files (missing, or not a directory); `nil` when it is a directory.
    private static func directoryProblem(_ directory: String) -> String? {
        var info = stat()
        guard stat(directory, &info) == 0 else { return errno == ENOENT ? "does not exist" : "cannot be read (\(String(cString: strerror(errno))))" }
        return info.st_mode & S_IFMT == S_IFDIR ? nil : "is not a directory"
    }

    /// What the secrets mask holds for `service` when the agent starts: the file's values, or, when it does not parse,
    /// every value-like text in it (`DotEnvFile.salvage`): the apps still run with the values they were started with
    /// (an operator's edit broke a line), and their logs still hold them. `nil` when the file cannot be read at all.
    static func valuesToMask(service: String, directory: String) -> [String: String]? {
        let path = "\(directory)/\(service).env"
        let read: [UInt8]?
        do {
            read = try DotEnvFile.read(path: path)
        } catch {
            return nil
        }
        guard let bytes = read else { return [:] }
        return (try? DotEnvFile.parse(bytes, path: path)) ?? DotEnvFile.salvage(bytes)
    }

    /// SHA-256 over the variables sorted by name, each name and value preceded by its length in bytes (8 bytes, big
    /// endian), so no two environments share the bytes hashed. No variables: the digest of nothing, as of an absent file.
    static func canonicalDigest(_ values: [String: String]) -> String {
        var bytes: [UInt8] = []
        func append(_ text: String) {
            let utf8 = Array(text.utf8)
            withUnsafeBytes(of: UInt64(utf8.count).bigEndian) { bytes.append(contentsOf: $0) }
            bytes.append(contentsOf: utf8)
        }
        for name in values.keys.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }) {
            append(name)
            append(values[name] ?? "")
        }
        return SHA256.hash(bytes).hex
    }

    /// This file as compared with `recorded`, the digest stored with the applied release: when that is the digest of
    /// these very bytes an older agent recorded, it stands for the variables (an upgrade of the agent reloads nothing).
    func continuing(_ recorded: String?) -> InstanceEnvFile {
        guard let recorded, recorded == fileDigest else { return self }
        var file = self
        file.digest = recorded
        return file
    }
}
