import Foundation
import Shared

/// The release-wide environment as `publish` and `plan` take it: `--env KEY=VALUE` pairs and an `--env-file`.
enum ReleaseEnvironment {
    /// Parses one `--env KEY=VALUE` pair. The value is taken as the shell passed it (no quotes, escapes or comments).
    static func pair(_ text: String, source: String) throws(ConfigurationError) -> (String, String) {
        guard let equals = text.firstIndex(of: "=") else {
            throw .invalidSetting(name: source, value: text, reason: "expected KEY=VALUE")
        }
        let key = String(text[..<equals]).trimmingCharacters(in: .whitespaces)
        guard Field.isEnvironmentName(key) else {
            throw .invalidSetting(name: source, value: text, reason: "\(key) is not a valid variable name (^[A-Za-z_][A-Za-z0-9_]*$)")
        }
        return (key, String(text[text.index(after: equals)...]))
    }

    /// Reads an `--env-file` in Ferry's one `.env` dialect (`DotEnvFile`, the same as the agent's instance env files).
    /// The file must exist; a pipe is fine (`--env-file <(sops -d secrets.env)`). It may be twice the size of an env map
    /// (comments, quotes), and hold as many variables.
    static func read(envFile path: String) throws(DotEnvFileError) -> [String: String] {
        let configuration = DotEnvFile.Configuration(maxBytes: Limits.envTotalBytes * 2, regularFilesOnly: false)
        guard let bytes = try DotEnvFile.read(path: path, configuration: configuration) else {
            throw DotEnvFileError(path: path, line: nil, problem: .missing)
        }
        return try DotEnvFile.parse(bytes, path: path, configuration: configuration)
    }
}
