import Shared

extension JSONValue {
    /// The fields of an object, or `nil`.
    var object: [String: JSONValue]? {
        if case .object(let fields) = self { return fields }
        return nil
    }
}
