import Shared

extension ServiceStatus {
    /// A status of `service` running serial `serial` (version `<serial>.0.0`, its target) and healthy, for tests that only
    /// need where an agent stands.
    static func running(_ service: String = "web", serial: Int64, message: String = "") -> ServiceStatus {
        ServiceStatus(
            service: service,
            serial: serial,
            version: "\(serial).0.0",
            targetSerial: serial,
            phase: .running,
            message: message,
            health: .healthy,
            processes: []
        )
    }
}
