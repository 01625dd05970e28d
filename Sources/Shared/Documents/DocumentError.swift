/// Why a document (a release, an envelope, a status report) was refused. Every case names the field path.
package enum DocumentError: Error, Equatable, CustomStringConvertible {
    /// Not JSON at all.
    case malformedJSON(String)
    /// A string, map or the whole document is over its size limit (bytes or characters as the limit says).
    case tooLarge(field: String, limit: Int, actual: Int)
    /// A required field is absent.
    case missingField(String)
    /// A field the format does not define (a typo must not silently drop a setting).
    case unknownField(String)
    /// A field has the wrong JSON type.
    case wrongType(field: String, expected: String, got: String)
    /// A field has the right type but a value the format forbids.
    case invalidValue(field: String, reason: String)
    /// A list or map has more entries than allowed.
    case tooMany(field: String, limit: Int, actual: Int)
    /// An option Ferry sets itself (`cwd`, `namespace`, log paths) was given by the operator.
    case ownedByFerry(field: String)
    /// Two PM2 apps share a name.
    case duplicateAppName(field: String, name: String)

    package var description: String {
        switch self {
        case .malformedJSON(let reason): "malformed JSON: \(reason)"
        case .tooLarge(let field, let limit, let actual): "\(field): \(actual) is over the limit of \(limit)"
        case .missingField(let field): "\(field): required field is missing"
        case .unknownField(let field): "\(field): unknown field"
        case .wrongType(let field, let expected, let got): "\(field): expected \(expected), got \(got)"
        case .invalidValue(let field, let reason): "\(field): \(reason)"
        case .tooMany(let field, let limit, let actual): "\(field): \(actual) entries, the limit is \(limit)"
        case .ownedByFerry(let field): "\(field): this option is set by Ferry on the instance and cannot be given in a release"
        case .duplicateAppName(let field, let name): "\(field): app name \"\(name)\" is used twice"
        }
    }
}
