import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// What `enroll` pinned, beside the paths in the config: the digest of the `trustRoot` file, or the ids of the
/// `trustedKeys` files' keys (`<stateDir>/trust-pin.json`, 0600).
///
/// The config names files by path, read again at every start: without this, anyone who could write one of them (a root
/// file left in `/tmp`, a key directory with loose permissions) chose which keys the agent trusts after its next
/// restart. A file that is not the one enrolled is refused. Kept in the state directory, not the config, so an older
/// agent binary (which refuses fields it does not know) still reads the config; an enrolment from before it has no such
/// file, and its files are read unchecked as before.
struct TrustPin: Equatable, Sendable {
    var trustRootSHA256: SHA256Digest?
    var trustedKeyIDs: [String]?
    /// The `threshold` enrolled with `trustedKeyIDs` (`nil` in a pin from before it was kept).
    var threshold: Int?

    static func path(stateDir: String) -> String { "\(stateDir)/trust-pin.json" }

    /// The pin of the agent whose state directory is `stateDir`, or `nil` when there is none.
    static func read(stateDir: String) throws -> TrustPin? {
        let file = path(stateDir: stateDir)
        guard FileManager.default.fileExists(atPath: file) else { return nil }
        do {
            var reader = try ObjectReader(try JSONValue.parse(try SmallFile.contents(of: file, limit: 1 << 20)), path: "")
            var pin = TrustPin()
            if let text = try reader.optional("trustRootSha256", Field.string(maxLength: 64)) {
                guard let digest = SHA256Digest(hex: text) else {
                    throw DocumentError.invalidValue(field: "trustRootSha256", reason: "\"\(text)\" is not 64 lowercase hex characters")
                }
                pin.trustRootSHA256 = digest
            }
            pin.trustedKeyIDs = try reader.optional("trustedKeyIds", Field.list(limit: 16_384, Field.string(maxLength: 64)))
            pin.threshold = try reader.optional("threshold", Field.integer(in: 1...16_384)).map { Int($0) }
            try reader.rejectUnknownFields()
            return pin
        } catch {
            throw AgentConfig.ConfigError(path: file, reason: "the trust pin written at enrollment cannot be read: \(error)")
        }
    }

    /// Writes the pin into `stateDir`.
    func write(stateDir: String) throws {
        var fields: [String: JSONValue] = [:]
        if let trustRootSHA256 { fields["trustRootSha256"] = .string(trustRootSHA256.description) }
        if let trustedKeyIDs { fields["trustedKeyIds"] = .array(trustedKeyIDs.map { .string($0) }) }
        if let threshold { fields["threshold"] = .integer(Int64(threshold)) }
        try AtomicFile.write(Array(JSONValue.object(fields).encoded()), to: Self.path(stateDir: stateDir), mode: 0o600)
    }
}
