import ArgumentParser
import Foundation

/// `--controller` and `--token`, shared by the operator commands, with their environment twins.
struct ControllerOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The controller's URL (or FERRY_CONTROLLER_URL).", valueName: "URL"))
    var controller: String?

    @Option(name: .long, help: ArgumentHelp("An API token (or FERRY_TOKEN).", valueName: "TOKEN"))
    var token: String?

    /// A client for the controller the flags or the environment name.
    func client(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> ControllerClient {
        guard let url = controller ?? environment["FERRY_CONTROLLER_URL"].flatMap({ $0.isEmpty ? nil : $0 }) else {
            throw ValidationError("give the controller's URL with --controller URL or FERRY_CONTROLLER_URL")
        }
        guard url.hasPrefix("http://") || url.hasPrefix("https://"), URL(string: url)?.host != nil else {
            throw ValidationError("--controller \(url) is not an http:// or https:// URL")
        }
        guard let token = token ?? environment["FERRY_TOKEN"].flatMap({ $0.isEmpty ? nil : $0 }) else {
            throw ValidationError("give an API token with --token TOKEN or FERRY_TOKEN")
        }
        return ControllerClient(baseURL: url, token: token.trimmingCharacters(in: .whitespacesAndNewlines))
    }
}

/// `--key` (repeatable) with its environment twin `FERRY_KEY` (comma-separated paths).
struct SigningKeyOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("A PKCS#8 PEM Ed25519 private key (or FERRY_KEY). Repeatable.", valueName: "FILE.key"))
    var key: [String] = []

    /// The key files the flags or the environment name.
    func keyPaths(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> [String] {
        if !key.isEmpty { return key }
        let fromEnvironment = (environment["FERRY_KEY"] ?? "").split(separator: ",").map {
            $0.trimmingCharacters(in: .whitespaces)
        }.filter { !$0.isEmpty }
        guard !fromEnvironment.isEmpty else { throw ValidationError("give a signing key with --key FILE.key or FERRY_KEY") }
        return fromEnvironment
    }
}
