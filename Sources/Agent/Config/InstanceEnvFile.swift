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
    /// SHA-256 of the file's bytes (empty file when absent), to notice changes without keeping the values around.
    var digest: String

    /// Reads the env file of `service` in `directory`; an absent file is an empty environment.
    ///
    /// A file that exists but cannot be read is an error, not "no secrets": reading it as empty would reload the apps
    /// without them. Limits: `Limits.envTotalBytes` bytes, `Limits.envEntries` variables.
    static func load(service: String, directory: String) throws(DotEnvFileError) -> InstanceEnvFile {
        let path = "\(directory)/\(service).env"
        guard let bytes = try DotEnvFile.read(path: path) else {
            return InstanceEnvFile(values: [:], digest: SHA256.hash([UInt8]()).hex)
        }
        return InstanceEnvFile(values: try DotEnvFile.parse(bytes, path: path), digest: SHA256.hash(bytes).hex)
    }
}
