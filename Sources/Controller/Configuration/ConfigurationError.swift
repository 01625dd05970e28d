/// A configuration input (config file, ecosystem file, env file, flag) that cannot be used.
enum ConfigurationError: Error, CustomStringConvertible, Equatable {
    /// The file cannot be read or parsed at all.
    case unreadable(path: String, reason: String)
    /// A field of the file has a value Ferry cannot use.
    case invalid(path: String, field: String, reason: String)
    /// A flag or environment variable has a value Ferry cannot use.
    case invalidSetting(name: String, value: String, reason: String)
    /// A flag's value Ferry cannot use, which may be a secret: the reason says what is wrong without quoting it.
    case invalidHiddenSetting(name: String, reason: String)
    /// Something required was given nowhere.
    case missing(String)

    var description: String {
        switch self {
        case .unreadable(let path, let reason): "\(path): \(reason)"
        case .invalid(let path, let field, let reason): "\(path): \(field): \(reason)"
        case .invalidSetting(let name, let value, let reason): "\(name) \"\(value.prefix(200))\": \(reason)"
        case .invalidHiddenSetting(let name, let reason): "\(name): \(reason)"
        case .missing(let what): what
        }
    }
}
