import Logging
import ServiceLifecycle
import UnixSignals

/// Reloads the TLS certificate and key on SIGHUP (`systemctl reload ferry-controller`, or `kill -HUP`).
///
/// New handshakes use the new pair; established connections and parked long-polls keep theirs. A pair that does not
/// load is logged and the current one keeps being served. Without TLS a SIGHUP is logged and otherwise ignored (never
/// the default action, which would end the process).
struct TLSReloadService: Service {
    let certificates: TLSCertificateStore?
    /// Created before the service group starts, so a SIGHUP that arrives as soon as the server listens is caught.
    let signals: UnixSignalsSequence
    let logger: Logger

    /// Traps SIGHUP now; `run()` handles the signals.
    init(certificates: TLSCertificateStore?, logger: Logger) async {
        self.certificates = certificates
        self.logger = logger
        self.signals = await UnixSignalsSequence(trapping: .sighup)
    }

    func run() async throws {
        for await _ in signals.cancelOnGracefulShutdown() {
            Self.reload(certificates, logger: logger)
        }
    }

    /// One reload, as on SIGHUP.
    static func reload(_ certificates: TLSCertificateStore?, logger: Logger) {
        guard let certificates else {
            logger.info("SIGHUP ignored: the controller serves plain HTTP, there is no certificate to reload")
            return
        }
        do {
            try certificates.reload()
            certificates.logCurrent("TLS certificate reloaded: new connections use it", logger: logger)
        } catch {
            logger.error(
                "TLS certificate reload failed: still serving the previous certificate",
                metadata: ["error.message": "\(error)", "ferry.tls.serial": "\(certificates.summary.serial)"]
            )
        }
    }
}
