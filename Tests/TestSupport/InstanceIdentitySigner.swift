import Foundation

/// A stand-in for AWS's signing of EC2 instance identity documents, made with the real `openssl` command-line tool in
/// a directory of the test's own: a self-signed certificate and key (what a controller is given with
/// `--instance-identity-cert`) and PKCS #7 signatures of documents, base64 in lines of 64 as
/// `/latest/dynamic/instance-identity/pkcs7` serves them. Never AWS's key: tests cannot reach AWS, and need a signer
/// they control to forge with.
public struct InstanceIdentitySigner: Sendable {
    public let directory: URL
    public let certificate: String
    public let key: String

    /// Makes a certificate and key named `name` in `directory` (`-set_serial` and `subject` let a test make a second
    /// signer that names itself exactly as the first does).
    public static func make(
        in directory: URL,
        name: String = "aws",
        subject: String = "/C=US/ST=Washington/L=Seattle/O=Amazon Web Services LLC",
        serial: String = "0x1234",
        dsa: Bool = false
    ) async throws -> InstanceIdentitySigner {
        let certificate = directory.appendingPathComponent("\(name).pem").path
        let key = directory.appendingPathComponent("\(name).key").path
        var algorithm = "rsa:2048"
        if dsa {
            // AWS's certificate for the pkcs7 endpoint was long a DSA one.
            let parameters = directory.appendingPathComponent("\(name)-dsa-parameters.pem").path
            let made = try await Command.run("openssl", ["dsaparam", "-out", parameters, "2048"])
            guard made.status == 0 else { throw SignerError(message: "openssl dsaparam failed: \(made.stderr)") }
            algorithm = "dsa:\(parameters)"
        }
        let result = try await Command.run(
            "openssl",
            [
                "req", "-x509", "-newkey", algorithm, "-nodes", "-keyout", key, "-out", certificate, "-days", "3650", "-subj", subject,
                "-set_serial", serial,
            ]
        )
        guard result.status == 0 else { throw SignerError(message: "openssl req failed: \(result.stderr)") }
        return InstanceIdentitySigner(directory: directory, certificate: certificate, key: key)
    }

    /// A document as the metadata service serves it (pretty-printed JSON).
    public static func document(instanceID: String, accountID: String = "123456789012", region: String = "eu-west-1") -> String {
        """
        {
          "accountId" : "\(accountID)",
          "architecture" : "x86_64",
          "availabilityZone" : "\(region)a",
          "billingProducts" : null,
          "devpayProductCodes" : null,
          "marketplaceProductCodes" : null,
          "imageId" : "ami-0123456789abcdef0",
          "instanceId" : "\(instanceID)",
          "instanceType" : "t3.small",
          "kernelId" : null,
          "pendingTime" : "2026-12-05T10:00:00Z",
          "privateIp" : "10.0.0.12",
          "ramdiskId" : null,
          "region" : "\(region)",
          "version" : "2017-09-30"
        }
        """
    }

    /// The PKCS #7 signature of `document`: base64 of DER in lines of 64, without PEM armour. `detached`: the
    /// document is not inside it.
    public func sign(_ document: String, detached: Bool = false, digest: String = "sha256") async throws -> String {
        let id = UUID().uuidString
        let input = directory.appendingPathComponent("doc-\(id)").path
        let output = directory.appendingPathComponent("sig-\(id).der").path
        try Data(document.utf8).write(to: URL(fileURLWithPath: input))
        var arguments = [
            "smime", "-sign", "-binary", "-md", digest, "-in", input, "-signer", certificate, "-inkey", key, "-outform", "DER", "-out", output,
        ]
        if !detached { arguments.append("-nodetach") }
        let result = try await Command.run("openssl", arguments)
        guard result.status == 0 else { throw SignerError(message: "openssl smime -sign failed: \(result.stderr)") }
        let der = try Data(contentsOf: URL(fileURLWithPath: output))
        try? FileManager.default.removeItem(atPath: input)
        try? FileManager.default.removeItem(atPath: output)
        return der.base64EncodedString(options: [.lineLength64Characters, .endLineWithLineFeed])
    }

    public struct SignerError: Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }

        public init(message: String) { self.message = message }
    }
}
