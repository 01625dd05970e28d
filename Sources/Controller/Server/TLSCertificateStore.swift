import Foundation
import Logging
import NIOSSL
import Shared
import Synchronization

/// The controller's TLS certificate chain and private key, loaded from PEM files, and the `NIOSSLContext` every new
/// connection's handshake uses.
///
/// `reload()` (SIGHUP) reads the files again and swaps the context under a lock: handshakes that start afterwards use
/// the new pair, established connections (parked long-polls included) keep theirs. A pair that does not load is
/// reported and the current one stays.
final class TLSCertificateStore: Sendable {
    /// The two PEM files (`serve --tls-cert FILE --tls-key FILE`).
    struct Files: Sendable, Equatable {
        /// The server certificate, then any intermediates (leaf first).
        var certificate: String
        /// Its private key (PKCS#8, or traditional RSA/EC PEM).
        var key: String
    }

    /// What a loaded certificate is, for logs and tests.
    struct Summary: Sendable, Equatable {
        /// Serial number, lowercase hex.
        let serial: String
        /// SHA-256 of the leaf certificate's DER, lowercase hex (what `openssl x509 -fingerprint -sha256` prints).
        let fingerprint: String
        let notValidBefore: Date
        let notValidAfter: Date
        /// Certificates in the chain (leaf included).
        let chainLength: Int

        /// Why clients refuse the certificate at `now` ("has expired", "is not valid yet"), `nil` while it is valid.
        /// - Parameter skew: how far in the future its start may be and still count as valid.
        func validityProblem(at now: Date, skew: TimeInterval = 0) -> String? {
            if notValidAfter < now { return "has expired (\(Timestamp.format(notValidAfter)))" }
            if notValidBefore > now.addingTimeInterval(skew) { return "is not valid yet (until \(Timestamp.format(notValidBefore)))" }
            return nil
        }
    }

    private struct Loaded: Sendable {
        let context: NIOSSLContext
        let summary: Summary
    }

    /// How far ahead a reloaded certificate's start may be (`reload`): 5 minutes of clock difference with the CA.
    static let startSkew: TimeInterval = 300

    /// Largest PEM file read.
    static let maximumFileBytes = 1 << 20

    let files: Files
    private let current: Mutex<Loaded>

    /// Loads the pair; throws when either file is unreadable or not PEM, or the key is not the certificate's.
    init(files: Files) throws(TLSFileError) {
        self.files = files
        self.current = Mutex(try Self.load(files))
    }

    /// The context for the next handshake.
    var context: NIOSSLContext { current.withLock { $0.context } }

    /// The certificate handshakes use now.
    var summary: Summary { current.withLock { $0.summary } }

    /// Reads both files again and, when they load, uses them for every handshake from now on. On failure the current
    /// pair stays and the error says why.
    ///
    /// A certificate that is expired or not valid yet at `now` does not replace one that is valid: an old certificate
    /// copied into place by mistake would fail every agent's next handshake. It does replace one that is itself no
    /// longer valid (nothing is lost). A start up to `startSkew` ahead counts as valid: a renewal just signed on a CA
    /// whose clock runs a little ahead, reloaded at once, was refused, and nothing loads it again before the old
    /// certificate expires.
    @discardableResult
    func reload(now: Date = Date()) throws(TLSFileError) -> Summary {
        let loaded = try Self.load(files)
        try current.withLock { (current: inout Loaded) throws(TLSFileError) in
            if let problem = loaded.summary.validityProblem(at: now, skew: Self.startSkew), current.summary.validityProblem(at: now) == nil {
                throw .notValid(path: files.certificate, reason: problem)
            }
            current = loaded
        }
        return loaded.summary
    }

    /// Logs what is served now, with a warning when the certificate is expired, not yet valid, expiring within 14 days,
    /// or the key file is readable by other users.
    func logCurrent(_ message: Logger.Message, logger: Logger, now: Date = Date()) {
        let summary = self.summary
        var metadata: Logger.Metadata = [
            "ferry.tls.certificate": "\(files.certificate)", "ferry.tls.serial": "\(summary.serial)",
            "ferry.tls.sha256": "\(summary.fingerprint)", "ferry.tls.not_after": "\(Timestamp.format(summary.notValidAfter))",
        ]
        logger.info(message, metadata: metadata)
        if let problem = summary.validityProblem(at: now) {
            logger.warning("The TLS certificate \(problem): clients will refuse it; renew it and send SIGHUP", metadata: metadata)
        } else if summary.notValidAfter.timeIntervalSince(now) < 14 * 86_400 {
            logger.warning("The TLS certificate expires within 14 days: renew it and send SIGHUP", metadata: metadata)
        }
        var info = stat()
        if stat(files.key, &info) == 0, info.st_mode & 0o077 != 0 {
            metadata["ferry.tls.key"] = "\(files.key)"
            metadata["ferry.tls.key_mode"] = "\(String(info.st_mode & 0o777, radix: 8))"
            logger.warning("The TLS key file is readable by other users: chmod 600 it", metadata: metadata)
        }
    }

    // MARK: Loading

    private static func load(_ files: Files) throws(TLSFileError) -> Loaded {
        let certificateBytes = try read(files.certificate, what: "certificate")
        let keyBytes = try read(files.key, what: "key")
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMBytes(certificateBytes)
        } catch {
            throw .invalidCertificate(path: files.certificate, reason: "not a PEM certificate (\(error))")
        }
        guard let leaf = chain.first else {
            throw .invalidCertificate(path: files.certificate, reason: "no \"BEGIN CERTIFICATE\" block in it")
        }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(bytes: keyBytes, format: .pem)
        } catch {
            throw .invalidKey(path: files.key, reason: "not a PEM private key, or an encrypted one (\(error))")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) },
            privateKey: .privateKey(key)
        )
        configuration.minimumTLSVersion = .tlsv12
        configuration.applicationProtocols = ["http/1.1"]
        let context: NIOSSLContext
        do {
            // BoringSSL checks here that the key belongs to the leaf certificate.
            context = try NIOSSLContext(configuration: configuration)
        } catch NIOSSLError.failedToLoadPrivateKey {
            throw .keyMismatch(certificate: files.certificate, key: files.key)
        } catch {
            throw .unusable(certificate: files.certificate, key: files.key, reason: "\(error)")
        }
        let der: [UInt8]
        do {
            der = try leaf.toDERBytes()
        } catch {
            throw .invalidCertificate(path: files.certificate, reason: "cannot encode it (\(error))")
        }
        let summary = Summary(
            serial: Hex.encode(leaf.serialNumber),
            fingerprint: SHA256.hash(der).hex,
            notValidBefore: Date(timeIntervalSince1970: TimeInterval(leaf.notValidBefore)),
            notValidAfter: Date(timeIntervalSince1970: TimeInterval(leaf.notValidAfter)),
            chainLength: chain.count
        )
        return Loaded(context: context, summary: summary)
    }

    private static func read(_ path: String, what: String) throws(TLSFileError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .unreadable(path: path, what: what, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = buffer.withUnsafeMutableBytes { Foundation.read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw .unreadable(path: path, what: what, reason: String(cString: strerror(errno)))
            }
            if count == 0 { break }
            bytes.append(contentsOf: buffer[0..<count])
            guard bytes.count <= maximumFileBytes else {
                throw .unreadable(path: path, what: what, reason: "larger than \(maximumFileBytes) bytes; is it the right file?")
            }
        }
        guard !bytes.isEmpty else { throw .unreadable(path: path, what: what, reason: "the file is empty") }
        return bytes
    }
}

/// Why the TLS certificate or key cannot be used.
enum TLSFileError: Error, CustomStringConvertible, Equatable {
    case unreadable(path: String, what: String, reason: String)
    case invalidCertificate(path: String, reason: String)
    case invalidKey(path: String, reason: String)
    case keyMismatch(certificate: String, key: String)
    case unusable(certificate: String, key: String, reason: String)
    /// A reload found a certificate clients refuse (expired, not valid yet) where a valid one is served.
    case notValid(path: String, reason: String)

    var description: String {
        switch self {
        case .unreadable(let path, let what, let reason):
            "cannot read the TLS \(what) \(path): \(reason)"
        case .invalidCertificate(let path, let reason):
            "the TLS certificate \(path) cannot be used: \(reason)"
        case .invalidKey(let path, let reason):
            "the TLS key \(path) cannot be used: \(reason); give the unencrypted PEM key of the certificate"
        case .keyMismatch(let certificate, let key):
            "the TLS key \(key) does not belong to the certificate \(certificate): give the key the certificate was issued for "
                + "(the first certificate in the file must be the server's own, intermediates after it)"
        case .unusable(let certificate, let key, let reason):
            "the TLS certificate \(certificate) and key \(key) cannot be used together: \(reason)"
        case .notValid(let path, let reason):
            "the TLS certificate \(path) \(reason): clients would refuse it, so the valid certificate served now stays"
        }
    }
}
