import Foundation
import Shared

/// The release-wide environment as `publish` and `plan` take it: `--env KEY=VALUE` pairs and an `--env-file`.
enum ReleaseEnvironment {
    /// Parses one `--env KEY=VALUE` pair. The value is taken as the shell passed it (no quotes, escapes or comments).
    /// An error never quotes the text: `--env "$SECRET"` without its `KEY=` is the secret alone, and would go to a CI log.
    static func pair(_ text: String, source: String) throws(ConfigurationError) -> (String, String) {
        guard let equals = text.firstIndex(of: "=") else {
            throw .invalidHiddenSetting(name: source, reason: "expected KEY=VALUE (the text is not shown: it may be a secret)")
        }
        let key = String(text[..<equals]).trimmingCharacters(in: .whitespaces)
        guard Field.isEnvironmentName(key) else {
            let leading = text.prefix { $0 == " " || $0 == "\t" }.count
            throw .invalidHiddenSetting(name: source, reason: "\(DotEnvFileError.Problem.badName(key, column: leading + 1))")
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
