/// Why a key could not be loaded, saved or used.
package enum KeyError: Error, CustomStringConvertible, Equatable {
    /// The file could not be read or written.
    case io(path: String, reason: String)
    /// The text is not a PEM block of the expected kind.
    case notPEM(source: String, expected: String)
    /// The key parsed but is not an Ed25519 key.
    case wrongAlgorithm(source: String)
    /// Raw key material of the wrong length.
    case badRawKeyLength(expected: Int, got: Int)
    /// The destination already exists and would be overwritten.
    case alreadyExists(path: String)
    /// OpenSSL refused an operation.
    case openSSL(String)
    /// An Ed25519 public key of small order or in a non-canonical encoding: signatures "by" it can be made without any
    /// private key.
    case weakKey(source: String)

    package var description: String {
        switch self {
        case .io(let path, let reason): "\(path): \(reason)"
        case .notPEM(let source, let expected): "\(source): not a PEM \(expected)"
        case .wrongAlgorithm(let source): "\(source): not an Ed25519 key (Ferry signs with Ed25519 only)"
        case .badRawKeyLength(let expected, let got): "raw Ed25519 key must be \(expected) bytes, got \(got)"
        case .alreadyExists(let path): "\(path) already exists; refusing to overwrite a key"
        case .openSSL(let message): message
        case .weakKey(let source):
            "\(source): a weak Ed25519 public key (a point of small order, or a non-canonical encoding): anyone could forge signatures it accepts; refusing it"
        }
    }
}
