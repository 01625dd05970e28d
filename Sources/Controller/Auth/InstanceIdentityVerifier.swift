import COpenSSL
import Foundation
import Shared

/// An EC2 instance that proved who it is: the fields of its identity document that AWS signed.
struct AttestedInstance: Sendable, Equatable {
    var instanceID: String
    var accountID: String
    var region: String
}

/// Why an instance identity proof was refused. Each says what was wrong and what to check.
struct InstanceIdentityError: Error, Sendable, Equatable, CustomStringConvertible {
    enum Kind: Sendable, Equatable {
        /// The proof is not a signature over a document of the expected form.
        case malformed
        /// It does not verify against the configured certificates.
        case untrusted
        /// It verifies, but the instance belongs to an account this controller does not enroll.
        case accountNotAllowed
    }

    var kind: Kind
    var description: String
}

/// Checks EC2 instance identity documents against AWS's public certificates (`serve --instance-identity-cert`) and
/// the accounts allowed to enroll (`--instance-identity-account`).
///
/// The signature's own copy of the document is what counts: the `document` text beside it is only read when the
/// signature is detached. The certificates given are trusted as they are, and only they can be a signer (a certificate
/// the message carries is ignored), as AWS's documentation has `openssl smime -verify -noverify -certfile`.
struct InstanceIdentityVerifier: Sendable {
    /// The certificates, PEM.
    let certificates: [UInt8]
    /// AWS account ids (12 digits) whose instances may enroll.
    let accounts: Set<String>

    /// - Throws: `ConfigurationError` naming the setting when the file holds no certificate or an account is not 12
    ///   digits, or none is given.
    init(certificateFile: String, accounts: [String]) throws(ConfigurationError) {
        let bytes: [UInt8]
        do {
            bytes = try CLIInput.read(certificateFile, limit: 1 << 20)
        } catch {
            throw .invalidSetting(name: "--instance-identity-cert", value: certificateFile, reason: "\(error)")
        }
        try self.init(certificates: bytes, accounts: accounts, source: certificateFile)
    }

    init(certificates: [UInt8], accounts: [String], source: String = "the certificates") throws(ConfigurationError) {
        let count = certificates.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { ferry_count_certificates($0.baseAddress, Int32(clamping: $0.count)) }
        }
        guard count > 0 else {
            throw .invalidSetting(
                name: "--instance-identity-cert",
                value: source,
                reason: "holds no PEM certificate (give AWS's public certificate for the instance identity document's PKCS7 "
                    + "signature in your regions, as published in the EC2 user guide)"
            )
        }
        guard !accounts.isEmpty else {
            throw .missing(
                "--instance-identity-cert is given without --instance-identity-account: name the AWS accounts whose instances "
                    + "may enroll (any AWS customer's instance carries a document AWS signed)"
            )
        }
        for account in accounts where !Self.isAccountID(account) {
            throw .invalidSetting(name: "--instance-identity-account", value: account, reason: "an AWS account id is 12 digits")
        }
        self.certificates = certificates
        self.accounts = Set(accounts)
    }

    /// The instance the proof names, once its signature verifies against the certificates and its account is allowed.
    func verify(_ proof: InstanceIdentityProof) throws(InstanceIdentityError) -> AttestedInstance {
        guard let der = Self.decodeBase64(proof.pkcs7) else {
            throw InstanceIdentityError(
                kind: .malformed,
                description: "the instance identity signature is not base64 (send what /latest/dynamic/instance-identity/pkcs7 answers)"
            )
        }
        let signed = try Self.signedContent(der: der, certificates: certificates, document: Array(proof.document.utf8))
        let instance = try Self.instance(in: signed)
        guard accounts.contains(instance.accountID) else {
            throw InstanceIdentityError(
                kind: .accountNotAllowed,
                description: "instance \(instance.instanceID) belongs to AWS account \(instance.accountID), which this controller does not "
                    + "enroll (--instance-identity-account)"
            )
        }
        return instance
    }

    /// The content the signature covers, once it verifies.
    private static func signedContent(der: [UInt8], certificates: [UInt8], document: [UInt8]) throws(InstanceIdentityError) -> [UInt8] {
        var content: OpaquePointer?
        let result = der.withUnsafeBufferPointer { der in
            certificates.withUnsafeBufferPointer { pem in
                pem.withMemoryRebound(to: CChar.self) { pem in
                    document.withUnsafeBufferPointer { document in
                        ferry_pkcs7_verify(
                            der.baseAddress,
                            der.count,
                            pem.baseAddress,
                            Int32(clamping: pem.count),
                            // No document at all: a detached signature is then refused as such.
                            document.isEmpty ? nil : document.baseAddress,
                            Int32(clamping: document.count),
                            &content
                        )
                    }
                }
            }
        }
        defer { BIO_free(content) }
        switch result {
        case FERRY_PKCS7_VERIFIED:
            guard let content else { break }
            var pointer: UnsafeMutablePointer<CChar>?
            let length = ferry_BIO_get_mem_data(content, &pointer)
            guard let pointer, length > 0 else {
                throw InstanceIdentityError(kind: .malformed, description: "the instance identity signature covers an empty document")
            }
            return pointer.withMemoryRebound(to: UInt8.self, capacity: length) { Array(UnsafeBufferPointer(start: $0, count: length)) }
        case FERRY_PKCS7_NOT_PKCS7:
            throw InstanceIdentityError(kind: .malformed, description: "the instance identity signature is not a DER PKCS #7 structure")
        case FERRY_PKCS7_NOT_SIGNED:
            throw InstanceIdentityError(kind: .malformed, description: "the instance identity signature is PKCS #7 but not signed data")
        case FERRY_PKCS7_NO_CONTENT:
            throw InstanceIdentityError(kind: .malformed, description: "the instance identity signature is detached and no document came with it")
        case FERRY_PKCS7_BAD_SIGNATURE:
            throw InstanceIdentityError(
                kind: .untrusted,
                description: "the instance identity signature does not verify against the configured AWS certificates "
                    + "(--instance-identity-cert): signed by someone else, or the document was changed"
            )
        default:
            break
        }
        throw InstanceIdentityError(kind: .malformed, description: "the instance identity signature could not be checked (out of memory)")
    }

    /// The fields of a signed document. Only the ones a controller relies on are required.
    private static func instance(in document: [UInt8]) throws(InstanceIdentityError) -> AttestedInstance {
        let value: JSONValue
        do {
            value = try JSONValue.parse(document)
        } catch {
            throw InstanceIdentityError(kind: .malformed, description: "the signed instance identity document is not JSON: \(error)")
        }
        guard case .object(let fields) = value else {
            throw InstanceIdentityError(kind: .malformed, description: "the signed instance identity document is not a JSON object")
        }
        func field(_ name: String) throws(InstanceIdentityError) -> String {
            guard case .string(let text) = fields[name], !text.isEmpty, text.utf8.count <= 64 else {
                throw InstanceIdentityError(kind: .malformed, description: "the signed instance identity document has no \(name)")
            }
            return text
        }
        let instanceID = try field("instanceId")
        guard InstanceIdentityProof.isInstanceID(instanceID) else {
            throw InstanceIdentityError(
                kind: .malformed,
                description: "the signed instance identity document's instanceId is not an instance id (i- and 8 or 17 hex digits)"
            )
        }
        let accountID = try field("accountId")
        guard isAccountID(accountID) else {
            throw InstanceIdentityError(kind: .malformed, description: "the signed instance identity document's accountId is not 12 digits")
        }
        return AttestedInstance(instanceID: instanceID, accountID: accountID, region: try field("region"))
    }

    /// Base64 as the metadata service serves it (lines of 64), or with PEM armour, whose lines are dropped.
    static func decodeBase64(_ text: String) -> [UInt8]? {
        let body = text.split(whereSeparator: \.isNewline).filter { !$0.hasPrefix("-----") }.joined()
        let compact = body.filter { !$0.isWhitespace }
        guard !compact.isEmpty, let data = Data(base64Encoded: compact) else { return nil }
        return Array(data)
    }

    static func isAccountID(_ text: String) -> Bool { text.utf8.count == 12 && text.utf8.allSatisfy { (0x30...0x39).contains($0) } }

}
