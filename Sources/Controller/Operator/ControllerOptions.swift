import ArgumentParser
import Foundation
import Shared

/// `--controller`, `--token` (or `--token-file`), `--ca-file` and `--allow-insecure-http`, shared by the operator
/// commands, with their environment twins.
struct ControllerOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The controller's URL (or FERRY_CONTROLLER_URL).", valueName: "URL"))
    var controller: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "An API token (or FERRY_TOKEN). On a shared host prefer --token-file: a command line is visible to every user.",
            valueName: "TOKEN"
        )
    )
    var token: String?

    @Option(
        name: .long,
        help: ArgumentHelp("A file holding the API token, its first line (or FERRY_TOKEN_FILE).", valueName: "FILE")
    )
    var tokenFile: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "PEM CA certificate(s) to verify the controller against instead of the system store (or FERRY_CA_FILE).",
            valueName: "FILE"
        )
    )
    var caFile: String?

    @Flag(
        name: .long,
        help: "Allow a plain http:// controller URL that is not loopback (or FERRY_ALLOW_INSECURE_HTTP=1): the token crosses the network unencrypted."
    )
    var allowInsecureHTTP = false

    /// A client for the controller the flags or the environment name.
    ///
    /// Refuses, before any connection, a plain `http://` URL whose host is not loopback (127.0.0.0/8, ::1, localhost)
    /// unless insecure HTTP is explicitly allowed: the bearer token would travel in clear text.
    func client(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> OperatorClient {
        guard let url = controller ?? environment["FERRY_CONTROLLER_URL"].flatMap({ $0.isEmpty ? nil : $0 }) else {
            throw ValidationError("give the controller's URL with --controller URL or FERRY_CONTROLLER_URL")
        }
        let lower = url.lowercased()
        guard lower.hasPrefix("http://") || lower.hasPrefix("https://"), let host = URL(string: url)?.host, !host.isEmpty else {
            throw ValidationError("--controller \(RedactedURL.redact(url)) is not an http:// or https:// URL")
        }
        if lower.hasPrefix("http://"), !Self.isLoopback(host), !(try allowsInsecureHTTP(environment: environment)) {
            throw ValidationError(
                "refusing the plain http:// controller URL \(RedactedURL.redact(url)): \(host) is not a loopback address, and the token would cross the "
                    + "network unencrypted. Use https:// (serve --tls-cert/--tls-key, or TLS at a load balancer), or, on a network "
                    + "you trust, pass --allow-insecure-http (or set FERRY_ALLOW_INSECURE_HTTP=1)"
            )
        }
        let (given, source) = try givenToken(environment: environment)
        // Trimmed before the check: a token read from a missing file (`FERRY_TOKEN="$(cat f) "`) or `--token ""` was sent
        // as an empty bearer and came back as a token the controller does not know.
        let trimmed = given.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !trimmed.isEmpty else { throw ValidationError("the API token given with \(source) is empty (or only white space)") }
        let caFile = self.caFile ?? environment["FERRY_CA_FILE"].flatMap { $0.isEmpty ? nil : $0 }
        if let caFile {
            guard FileManager.default.fileExists(atPath: caFile) else { throw ValidationError("--ca-file \(caFile): no such file") }
            guard FileManager.default.isReadableFile(atPath: caFile) else { throw ValidationError("--ca-file \(caFile): cannot read the file") }
        }
        return OperatorClient(baseURL: url, token: trimmed, caFile: caFile)
    }

    /// The token and where it came from: `--token`, `--token-file`, `FERRY_TOKEN`, `FERRY_TOKEN_FILE`, in that order (a
    /// flag over the environment, and both flags together refused). A file gives its first line; its text is never
    /// quoted in an error.
    private func givenToken(environment: [String: String]) throws -> (token: String, source: String) {
        if token != nil, tokenFile != nil { throw ValidationError("give --token or --token-file, not both") }
        if let token { return (token, "--token") }
        if let tokenFile { return (try Self.firstLine(of: tokenFile, flag: "--token-file"), "--token-file \(tokenFile)") }
        if let token = environment["FERRY_TOKEN"], !token.isEmpty { return (token, "FERRY_TOKEN") }
        if let file = environment["FERRY_TOKEN_FILE"], !file.isEmpty {
            return (try Self.firstLine(of: file, flag: "FERRY_TOKEN_FILE"), "FERRY_TOKEN_FILE \(file)")
        }
        throw ValidationError("give an API token with --token-file FILE, --token TOKEN, FERRY_TOKEN_FILE or FERRY_TOKEN")
    }

    /// Largest token file read: a token is a line; a path given by mistake (a log, an artifact) is not read whole.
    static let maximumTokenFileBytes = 64 << 10

    /// The first line of a token file (without its line break): a regular file, or a pipe (`<(...)`, `/dev/stdin` fed by
    /// one). A token given where its path goes is refused without being quoted ("no such file" would print it); a
    /// terminal, a directory or a FIFO nobody writes to is refused rather than waited on.
    static func firstLine(of path: String, flag: String) throws -> String {
        if path.hasPrefix(Token.prefix) {
            throw ValidationError("\(flag) takes a file's path, and the value given looks like a token itself (not shown); put it in a file")
        }
        // Non-blocking: opening a FIFO nobody writes to would wait for good.
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw ValidationError("\(flag) \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw ValidationError("\(flag) \(path): \(String(cString: strerror(errno)))") }
        switch info.st_mode & S_IFMT {
        case S_IFREG: break
        case S_IFIFO:
            // A pipe with a writer: read as it comes (a FIFO with none reads as empty, and is refused as empty).
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        default:
            throw ValidationError("\(flag) \(path): not a regular file or a pipe (a terminal, a directory): put the token in a file")
        }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while bytes.count <= maximumTokenFileBytes {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count >= 0 else { throw ValidationError("\(flag) \(path): \(String(cString: strerror(errno)))") }
            if count == 0 { break }
            bytes += buffer[0..<count]
            // The first line is all that is used: a pipe that goes on after it is not waited on.
            if buffer[0..<count].contains(0x0a) { break }
        }
        guard bytes.count <= maximumTokenFileBytes else {
            throw ValidationError("\(flag) \(path): over \(maximumTokenFileBytes) bytes, not a token file (its text is not shown)")
        }
        return String(decoding: bytes.prefix { $0 != 0x0a }, as: UTF8.self)
    }

    private func allowsInsecureHTTP(environment: [String: String]) throws -> Bool {
        if allowInsecureHTTP { return true }
        switch environment["FERRY_ALLOW_INSECURE_HTTP"]?.lowercased() {
        case nil, "", "0", "false", "no": return false
        case "1", "true", "yes": return true
        case let other?: throw ValidationError("FERRY_ALLOW_INSECURE_HTTP=\(other.prefix(40)) must be 1 or 0")
        }
    }

    /// Whether `host` (as a URL gives it) is a loopback address: 127.0.0.0/8, ::1 or `localhost`.
    static func isLoopback(_ host: String) -> Bool {
        var name = host.lowercased()
        if name.hasPrefix("["), name.hasSuffix("]") { name = String(name.dropFirst().dropLast()) }
        if name.hasSuffix(".") { name = String(name.dropLast()) }
        if name == "localhost" || name == "::1" || name == "0:0:0:0:0:0:0:1" { return true }
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return false }
        let octets = parts.compactMap { part -> Int? in
            guard (1...3).contains(part.count), part.allSatisfy({ ("0"..."9").contains($0) }), let value = Int(part), (0...255).contains(value) else {
                return nil
            }
            return value
        }
        return octets.count == 4 && octets[0] == 127
    }
}

/// `--key` (repeatable) with its environment twin `FERRY_KEY` (comma-separated paths).
struct SigningKeyOptions: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp("A PKCS#8 PEM Ed25519 private key file (or FERRY_KEY: paths, or the key itself). Repeatable.", valueName: "FILE.key")
    )
    var key: [String] = []

    /// The key files the flags or the environment name.
    func keyPaths(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> [String] {
        if !key.isEmpty {
            // A key pasted where its path goes would be quoted whole by the "no such file" error, into a CI log.
            guard !key.contains(where: Self.looksLikeAKey) else {
                throw ValidationError("--key takes a key file's path, and a value given looks like a key itself (not shown); put it in a file")
            }
            return key
        }
        let fromEnvironment = (environment["FERRY_KEY"] ?? "").split(separator: ",").map {
            $0.trimmingCharacters(in: .whitespaces)
        }.filter { !$0.isEmpty }
        guard !fromEnvironment.isEmpty else { throw ValidationError("give a signing key with --key FILE.key or FERRY_KEY") }
        return fromEnvironment
    }

    /// The signing keys: from the files `keyPaths` names, or, when `FERRY_KEY` holds a PEM private key itself (a CI
    /// secret pasted whole, as docs/security.md's "stored as a CI secret" invites), that key. Its text is never quoted
    /// in an error: a `FERRY_KEY` read as a path used to print the whole private key in "no such file", in the build log.
    func keys(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> [SigningKey] {
        if key.isEmpty, let value = environment["FERRY_KEY"], Self.looksLikeAKey(value) {
            do {
                return [try SigningKey(pem: value, source: "FERRY_KEY")]
            } catch {
                throw CLIError("FERRY_KEY holds a PEM block that is not a usable Ed25519 private key (its text is not shown)")
            }
        }
        return try keyPaths(environment: environment).map { try SigningKey(contentsOf: $0) }
    }

    /// Whether `text` is key material rather than a path: a PEM header, or more than one line.
    static func looksLikeAKey(_ text: String) -> Bool {
        text.contains("-----BEGIN") || text.contains("\n") || text.contains("\r")
    }
}
