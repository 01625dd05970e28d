import Foundation

/// A small PKI for TLS tests, made with the `openssl` CLI in a directory the caller owns (and removes):
/// a CA, server certificates it signed for 127.0.0.1 and localhost (one current, one renewed, one expired in 2020), and
/// a second, unrelated CA.
public struct TestCertificates: Sendable {
    /// A certificate and its key.
    public struct Pair: Sendable {
        public let certificate: String
        public let key: String
        /// Serial number, lowercase hex without leading zero bytes.
        public let serial: String
        /// SHA-256 of the DER certificate, lowercase hex without colons.
        public let fingerprint: String
    }

    public let directory: URL
    /// The CA that signed `server`, `renewed` and `expired`.
    public let caFile: String
    /// A CA that signed nothing this PKI serves: verifying against it must fail.
    public let otherCAFile: String
    /// Valid now for IP 127.0.0.1 and DNS localhost; serial 1001.
    public let server: Pair
    /// Another valid certificate for the same names with its own key; serial 1002 (a renewal, for reload tests).
    public let renewed: Pair
    /// For the same names, valid only in January 2020; serial 2001.
    public let expired: Pair

    /// Makes every file in `directory` (which must exist).
    public static func make(in directory: URL) throws -> TestCertificates {
        let dir = directory.path
        func openssl(_ arguments: [String]) throws -> String {
            let result = try Command.run("openssl", arguments)
            guard result.status == 0 else {
                throw TestCertificateError("openssl \(arguments.joined(separator: " ")) failed (\(result.status)): \(result.stderr)")
            }
            return result.stdout
        }
        func makeCA(_ name: String, subject: String) throws -> (certificate: String, key: String) {
            let certificate = "\(dir)/\(name).pem"
            let key = "\(dir)/\(name).key"
            _ = try openssl([
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", certificate,
                "-days", "30", "-subj", "/CN=\(subject)", "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            ])
            return (certificate, key)
        }
        let extensions = "\(dir)/server.ext"
        try Data("subjectAltName=IP:127.0.0.1,DNS:localhost\n".utf8).write(to: URL(fileURLWithPath: extensions))
        func makeRequest(_ name: String) throws -> (request: String, key: String) {
            let key = "\(dir)/\(name).key"
            let request = "\(dir)/\(name).csr"
            _ = try openssl([
                "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", request, "-subj", "/CN=localhost",
            ])
            try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: key)
            return (request, key)
        }
        func pair(_ certificate: String, key: String) throws -> Pair {
            let serial = try openssl(["x509", "-in", certificate, "-noout", "-serial"])
            let fingerprint = try openssl(["x509", "-in", certificate, "-noout", "-fingerprint", "-sha256"])
            func value(_ line: String) -> String {
                String(line.split(separator: "=", maxSplits: 1).last ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
            }
            var serialHex = value(serial).lowercased()
            while serialHex.hasPrefix("00"), serialHex.count > 2 { serialHex.removeFirst(2) }
            return Pair(
                certificate: certificate,
                key: key,
                serial: serialHex,
                fingerprint: value(fingerprint).replacingOccurrences(of: ":", with: "").lowercased()
            )
        }

        let ca = try makeCA("ca", subject: "Ferry Test CA")
        let other = try makeCA("other-ca", subject: "Unrelated Test CA")
        func signed(_ name: String, serial: String) throws -> Pair {
            let (request, key) = try makeRequest(name)
            let certificate = "\(dir)/\(name).pem"
            _ = try openssl([
                "x509", "-req", "-in", request, "-CA", ca.certificate, "-CAkey", ca.key, "-set_serial", "0x\(serial)", "-days", "30",
                "-extfile", extensions, "-out", certificate,
            ])
            return try pair(certificate, key: key)
        }
        let server = try signed("server", serial: "1001")
        let renewed = try signed("renewed", serial: "1002")

        // `openssl x509` only signs from now on; `openssl ca` takes explicit dates.
        let (expiredRequest, expiredKey) = try makeRequest("expired")
        let database = "\(dir)/ca-index.txt"
        try Data().write(to: URL(fileURLWithPath: database))
        try Data("2001\n".utf8).write(to: URL(fileURLWithPath: "\(dir)/ca-serial"))
        let configuration = "\(dir)/ca.cnf"
        try Data(
            """
            [ ca ]
            default_ca = test_ca
            [ test_ca ]
            database = \(database)
            new_certs_dir = \(dir)
            serial = \(dir)/ca-serial
            default_md = sha256
            policy = policy_any
            unique_subject = no
            [ policy_any ]
            commonName = supplied

            """.utf8
        ).write(to: URL(fileURLWithPath: configuration))
        let expiredCertificate = "\(dir)/expired.pem"
        _ = try openssl([
            "ca", "-batch", "-notext", "-config", configuration, "-cert", ca.certificate, "-keyfile", ca.key, "-in", expiredRequest,
            "-out", expiredCertificate, "-startdate", "20200101000000Z", "-enddate", "20200201000000Z", "-extfile", extensions,
        ])
        return TestCertificates(
            directory: directory,
            caFile: ca.certificate,
            otherCAFile: other.certificate,
            server: server,
            renewed: renewed,
            expired: try pair(expiredCertificate, key: expiredKey)
        )
    }
}

extension TestCertificates {
    /// What a new TLS connection to `127.0.0.1:port` is served: the leaf certificate's serial (lowercase hex) and
    /// SHA-256 fingerprint (lowercase hex), read with `openssl s_client` (no verification: it only looks).
    public static func servedCertificate(port: Int) throws -> (serial: String, fingerprint: String) {
        let handshake = try Command.run("openssl", ["s_client", "-connect", "127.0.0.1:\(port)", "-servername", "localhost"], stdin: Data())
        guard handshake.stdout.contains("BEGIN CERTIFICATE") else {
            throw TestCertificateError("openssl s_client got no certificate from port \(port): \(handshake.stderr.suffix(2000))")
        }
        let details = try Command.run("openssl", ["x509", "-noout", "-serial", "-fingerprint", "-sha256"], stdin: Data(handshake.stdout.utf8))
        var serial = ""
        var fingerprint = ""
        for line in details.stdout.split(separator: "\n") {
            let value = String(line.split(separator: "=", maxSplits: 1).last ?? "").trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("serial=") {
                serial = value.lowercased()
                while serial.hasPrefix("00"), serial.count > 2 { serial.removeFirst(2) }
            } else if line.lowercased().contains("fingerprint") {
                fingerprint = value.replacingOccurrences(of: ":", with: "").lowercased()
            }
        }
        guard !serial.isEmpty, !fingerprint.isEmpty else { throw TestCertificateError("cannot read the served certificate: \(details.stdout)") }
        return (serial, fingerprint)
    }
}

/// A test PKI could not be made.
public struct TestCertificateError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
