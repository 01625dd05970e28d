/// A URL as it may appear in errors and logs: user info removed, values of credential-like query parameters
/// (S3 `X-Amz-Signature`/`X-Amz-Credential`/`X-Amz-Security-Token`, `sig`, `token`, ...) replaced by `REDACTED`.
package enum RedactedURL {
    private static let sensitive = ["sig", "token", "key", "credential", "secret", "password", "auth", "session"]

    /// The names of `url`'s query parameters whose values `redact` replaces (`X-Amz-Signature`, `sig`, ...), in order.
    package static func credentialParameters(in url: String) -> [String] {
        var text = Substring(url)
        if let hash = text.firstIndex(of: "#") { text = text[..<hash] }
        guard let question = text.firstIndex(of: "?") else { return [] }
        return text[text.index(after: question)...].split(separator: "&").compactMap { parameter in
            let name = parameter.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)[0]
            return isSensitive(name) ? String(name) : nil
        }
    }

    private static func isSensitive(_ name: Substring) -> Bool {
        let lower = name.lowercased()
        return sensitive.contains(where: { lower.contains($0) })
    }

    /// `url` with credentials removed. `keepingValue`: a credential-like parameter's value that may stay (a health URL
    /// template's `${NAME}` placeholder names a secret without being one).
    package static func redact(_ url: String, keepingValue keep: (Substring) -> Bool = { _ in false }) -> String {
        // Nothing to take out without user info, a query or a fragment: the common case (every agent request) costs one
        // scan of the bytes.
        guard url.utf8.contains(where: { $0 == UInt8(ascii: "@") || $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "#") }) else {
            return url
        }
        var text = Substring(url)
        var fragment = ""
        if let hash = text.firstIndex(of: "#") {
            fragment = "#\(text[text.index(after: hash)...])"
            text = text[..<hash]
        }
        var query: Substring?
        if let question = text.firstIndex(of: "?") {
            query = text[text.index(after: question)...]
            text = text[..<question]
        }
        var base = String(text)
        if let colon = base.firstIndex(of: ":"), base[colon...].hasPrefix("://") {
            let authorityStart = base.index(colon, offsetBy: 3)
            let authorityEnd = base[authorityStart...].firstIndex(of: "/") ?? base.endIndex
            if let at = base[authorityStart..<authorityEnd].lastIndex(of: "@") {
                base.removeSubrange(authorityStart...at)
            }
        }
        guard let query else { return base + fragment }
        let parameters = query.split(separator: "&", omittingEmptySubsequences: false).map { parameter -> String in
            guard let equals = parameter.firstIndex(of: "=") else { return String(parameter) }
            let value = parameter[parameter.index(after: equals)...]
            return isSensitive(parameter[..<equals]) && !keep(value) ? "\(parameter[..<equals])=REDACTED" : String(parameter)
        }
        return base + "?" + parameters.joined(separator: "&") + fragment
    }
}
